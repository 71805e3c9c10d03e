"""Wall time and peak memory of one `flwr run` of a preset, over the whole process tree.

    python scripts/measure_scale.py --preset conf/digits-60.toml --output-dir /abs/run [--run-config '...']

`flwr run` starts a detached SuperLink whose children (ServerApp, Ray workers) are not children
of this script, so every process whose environment carries this run's FLWR_HOME is sampled once a
second and their resident memory is summed. Prints one JSON line with wall seconds, peak RSS (GiB),
clients, and seconds per client, and writes it to <output-dir>/scale.json.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import threading
import time
from pathlib import Path

import psutil

from warmfed_flwr import data
from warmfed_flwr.config import Settings
from warmfed_flwr.launch import requested_config, run_app


def tree_rss(flwr_home: str) -> int:
    """Summed resident bytes of every process running with this FLWR_HOME."""
    total = 0
    for proc in psutil.process_iter(["pid"]):
        try:
            if proc.environ().get("FLWR_HOME") == flwr_home:
                total += proc.memory_info().rss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return total


def stop_processes(flwr_home: str) -> None:
    """Stop the SuperLink and whatever else this run left behind."""
    for proc in psutil.process_iter(["pid"]):
        try:
            if proc.environ().get("FLWR_HOME") == flwr_home:
                proc.terminate()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", required=True)
    parser.add_argument("--run-config")
    parser.add_argument("--output-dir", required=True)
    args = parser.parse_args()
    config = requested_config(args.preset, args.run_config, args.output_dir)
    clients = data.num_clients(Settings.from_run_config(config).data)
    flwr_home = tempfile.mkdtemp(prefix="flwr-home-")
    os.environ["FLWR_HOME"] = flwr_home
    peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, tree_rss(flwr_home))
            time.sleep(1.0)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    start = time.perf_counter()
    try:
        out_dir = run_app(config, Path.cwd())
    finally:
        done.set()
        sampler.join()
        stop_processes(flwr_home)
    wall = time.perf_counter() - start
    record = {
        "preset": args.preset,
        "clients": clients,
        "wall_seconds": round(wall, 1),
        "seconds_per_client": round(wall / clients, 2),
        "peak_rss_gib": round(peak / 2**30, 2),
    }
    (out_dir / "scale.json").write_text(json.dumps(record, indent=2))
    print(json.dumps(record))


if __name__ == "__main__":
    main()
