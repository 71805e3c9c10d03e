"""What a run does when a Ray node dies under it: a cluster on this machine loses its worker node mid-`lora`.

    python scripts/lose_ray_node.py --out /tmp/lost [--head-cpus 1] [--preset conf/smoke.toml]
        [--run-config 'timeout=120.0 lora.steps=20']

Starts a head node (`--head-cpus` CPUs; 0 keeps clients off it) and one worker node of one CPU
(scripts/local_ray_cluster.py), runs the launcher on it, and kills the worker node's whole process
group, as a failing machine would die, while one of its ClientApp workers is fitting a client's
adapter. With a head that hosts clients the run should complete, the lost client asked again
there; with `--head-cpus 0` no node is left for the clients and the run should stop with an error
that names the lost node, keeping what finished. Prints one JSON line (exit code, wall seconds,
when the node was killed, the run's error, phases, retries, failures, nodes) and writes it to
OUT/lost-node.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

from local_ray_cluster import LaunchedRun, LocalRayCluster


def lose_node_during_lora(cluster: LocalRayCluster, node: str, run: LaunchedRun, timeout: float = 120.0) -> float:
    """Kill `node` once one of its ClientApp workers logs a LoRA fit's progress; the seconds since the launch."""
    run.wait_for_line("[lora] sending train.lora", timeout=timeout)
    deadline = time.monotonic() + timeout
    while not (workers := cluster.client_workers(node)):
        if time.monotonic() > deadline:
            raise TimeoutError(f"no ClientApp worker started on node {node}")
        time.sleep(0.1)
    run.wait_for_line(f"pid={workers[0]})", "[lora] partition", timeout=timeout)  # a fit is running there
    cluster.kill(node)
    return time.monotonic() - run.started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="the run's output folder")
    parser.add_argument("--head-cpus", type=int, default=1)
    parser.add_argument("--preset", default="conf/smoke.toml")
    parser.add_argument("--run-config", default="timeout=120.0 lora.steps=20")
    args = parser.parse_args()
    out = args.out.resolve()
    cluster = LocalRayCluster(cpus_per_node=1)
    flwr_home = cluster.temp_dir / "flwr-home"
    try:
        cluster.start_head(args.head_cpus)
        cluster.add_node("worker")
        cluster.wait_for_nodes(2)
        run = LaunchedRun(cluster.address, flwr_home, ["--preset", args.preset, "--output-dir", str(out),
                                                       "--run-config", args.run_config])
        killed_at = lose_node_during_lora(cluster, "worker", run)
        returncode = run.finish()
        wall = time.monotonic() - run.started
    finally:
        cluster.stop()
        shutil.rmtree(cluster.temp_dir, ignore_errors=True)
    results = json.loads((out / "results.json").read_text())
    record = {
        "head_cpus": args.head_cpus, "returncode": returncode, "wall_seconds": round(wall, 1),
        "node_killed_at_seconds": round(killed_at, 1), "error": results.get("error"), "phases": results["phases"],
        "retries": len(results["retries"]), "failures": len(results["failures"]),
        "nodes": [{k: node[k] for k in ("node_id", "clients", "pids")} for node in results["nodes"]],
        "launcher_said": [line.strip() for line in run.lines if "did not complete" in line or "[workers]" in line],
    }
    (out / "lost-node.json").write_text(json.dumps(record, indent=2))
    print(json.dumps(record))


if __name__ == "__main__":
    main()
