"""Wall time and peak memory of one `flwr run` of a preset, over every process of the run.

    python scripts/measure_scale.py --preset conf/digits-60.toml --output-dir /abs/run [--run-config '...']
        [--cpus-per-client 2]

`flwr run` starts a detached SuperLink whose children (ServerApp, Ray workers) are not children of
this script, so every process whose environment carries this run's fresh FLWR_HOME, and this
script itself, is sampled once a second. Two sums are recorded, each at its peak over time:
resident memory (RSS; a page shared by several processes, such as torch's libraries, is counted
in each) and proportional memory (PSS, Linux's smaps_rollup; a shared page is split between the
processes sharing it, so the sum is the memory the run really occupies). Per process, its own
peaks. The run gets a SuperLink of its own (launch.run_app), never one another run left behind.

Prints one JSON line and writes it to <output-dir>/scale.json (with each phase's seconds per client and
the peak of the process that runs the ServerApp and Flower's simulation engine, `flwr-simulation`);
every sample of every process (seconds since the start, pid, label, RSS and PSS bytes) goes to
<output-dir>/memory.csv. `scripts/plot_scale.py` draws the cost per client of several such runs.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import psutil

from warmfed_flwr.launch import count_clients, requested_config, run_app

@dataclass
class ProcessPeak:
    """One process's highest resident and proportional memory seen, and the CPU seconds it had used when last seen."""

    label: str
    rss: int = 0
    pss: int = 0
    cpu_seconds: float = 0.0


@dataclass
class MemorySampler:
    """Samples the run's processes; keeps the peak of each sum and of each process."""

    flwr_home: str
    peak_rss: int = 0
    peak_pss: int = 0
    processes: dict[int, ProcessPeak] = field(default_factory=dict)
    samples: list[tuple[float, int, str, int, int]] = field(default_factory=list)
    start: float = field(default_factory=time.perf_counter)

    def run_processes(self) -> list[psutil.Process]:
        """This script and every process started with this run's FLWR_HOME."""
        found = [psutil.Process()]
        for proc in psutil.process_iter(["pid"]):
            try:
                if proc.pid != found[0].pid and proc.environ().get("FLWR_HOME") == self.flwr_home:
                    found.append(proc)
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
        return found

    def sample(self) -> None:
        total_rss = total_pss = 0
        now = round(time.perf_counter() - self.start, 1)
        for proc in self.run_processes():
            try:
                rss, pss = proc.memory_info().rss, proportional_set_size(proc.pid)
                times = proc.cpu_times()
                peak = self.processes.setdefault(proc.pid, ProcessPeak(""))
                peak.cpu_seconds = times.user + times.system
                peak.label = label(proc)  # Ray names its workers after they start
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess, FileNotFoundError, ProcessLookupError):
                continue
            peak.rss, peak.pss = max(peak.rss, rss), max(peak.pss, pss)
            self.samples.append((now, proc.pid, peak.label, rss, pss))
            total_rss += rss
            total_pss += pss
        self.peak_rss, self.peak_pss = max(self.peak_rss, total_rss), max(self.peak_pss, total_pss)


def proportional_set_size(pid: int) -> int:
    """The process's PSS in bytes, from /proc/<pid>/smaps_rollup."""
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1]) * 1024
    return 0


def label(proc: psutil.Process) -> str:
    """A short name for a process: Ray's process title, or the program and its module."""
    command = proc.cmdline()
    if command and command[0].startswith("ray::"):
        return command[0]
    names = [Path(part).name for part in command[:3] if not part.startswith("-")]
    return " ".join(names) or proc.name()


def stop_processes(flwr_home: str, wait_seconds: float = 30.0) -> None:
    """Stop the SuperLink and whatever else this run left behind, and wait until they are gone (or killed)."""
    stopping = []
    for proc in psutil.process_iter(["pid"]):
        try:
            if proc.environ().get("FLWR_HOME") == flwr_home:
                proc.terminate()
                stopping.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    _, alive = psutil.wait_procs(stopping, timeout=wait_seconds)
    for proc in alive:
        proc.kill()


def own_flwr_home() -> str:
    """A fresh FLWR_HOME for this process and the run it starts, so that the run's processes can be told apart."""
    flwr_home = tempfile.mkdtemp(prefix="flwr-home-")
    os.environ["FLWR_HOME"] = flwr_home
    return flwr_home


def run_sampled(run: Callable[[], Path], flwr_home: str, *samplers: Callable[[], None]) -> tuple[Path, float]:
    """`run()` (a whole `flwr run` under `flwr_home`) with every sampler called once a second meanwhile; then stop
    what the run left behind. Returns the run's directory and its wall seconds."""
    done = threading.Event()

    def sample_every_second() -> None:
        while not done.is_set():
            for sample in samplers:
                sample()
            time.sleep(1.0)

    thread = threading.Thread(target=sample_every_second, daemon=True)
    thread.start()
    started = time.perf_counter()
    try:
        out_dir = run()
    finally:
        done.set()
        thread.join()
        stop_processes(flwr_home)
    return out_dir, time.perf_counter() - started


def gib(value: int) -> float:
    return round(value / 2**30, 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", required=True)
    parser.add_argument("--run-config")
    parser.add_argument("--output-dir", required=True)
    parser.add_argument(
        "--cpus-per-client", type=int, default=1,
        help="Ray CPUs per simulated client: the machine's cores divided by this many clients run at once",
    )
    args = parser.parse_args()
    config = requested_config(args.preset, args.run_config, args.output_dir)
    clients = count_clients(config)
    flwr_home = own_flwr_home()
    sampler = MemorySampler(flwr_home)
    out_dir, wall = run_sampled(
        lambda: run_app(config, Path.cwd(), cpus_per_client=args.cpus_per_client), flwr_home, sampler.sample
    )
    results = json.loads((out_dir / "results.json").read_text())
    record = {
        "preset": args.preset,
        "run_config": args.run_config or "",
        "cpus_per_client": args.cpus_per_client,
        "clients": clients,
        "wall_seconds": round(wall, 1),
        "seconds_per_client": round(wall / clients, 2),
        "peak_rss_sum_gib": gib(sampler.peak_rss),
        "peak_pss_sum_gib": gib(sampler.peak_pss),
        "phases": {phase["name"]: phase["seconds"] for phase in results["phases"]},
        "seconds_per_client_by_phase": {
            phase["name"]: round(phase["seconds"] / clients, 4) for phase in results["phases"]
        },
        "serverapp_peak_pss_gib": max((gib(peak.pss) for peak in sampler.processes.values()
                                       if peak.label.endswith("flwr-simulation")), default=None),
        "failures": len(results["failures"]),
        "processes": sorted(
            ({"label": peak.label, "peak_rss_gib": gib(peak.rss), "peak_pss_gib": gib(peak.pss),
              "cpu_seconds": round(peak.cpu_seconds, 1)}
             for peak in sampler.processes.values()),
            key=lambda entry: -entry["peak_pss_gib"],
        ),
    }
    (out_dir / "scale.json").write_text(json.dumps(record, indent=2))
    with (out_dir / "memory.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["seconds", "pid", "label", "rss_bytes", "pss_bytes"])
        writer.writerows(sampler.samples)
    print(json.dumps(record))


if __name__ == "__main__":
    main()
