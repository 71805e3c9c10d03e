"""What shipping the app to a Ray cluster's nodes costs: once per run, and per message.

    python scripts/measure_ray_shipping.py [--messages 200] [--out benchmarks/ray-shipping.json]

Starts a two-node Ray cluster on this machine (scripts/local_ray_cluster.py; as root the second node
cannot see the project folder, as on another machine) and measures, as the launcher's runs do it:
- joining the cluster with and without the runtime-env hook (`ray_cluster.ship_app`: the app's
  package uploaded once, then unpacked by each node on first use);
- the first call on a worker of the second node (its start, the package's unpacking, the import);
- per message, the round trip of a call that carries the ClientApp as Flower sends it with every
  message (pickled by reference), against the same call without it, on a worker of the second node.
Prints one JSON line and writes it to --out.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import ray
from local_ray_cluster import ROOT, LocalRayCluster
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from warmfed_flwr.client.app import app as client_app
from warmfed_flwr.runtime import ray_cluster


@ray.remote(num_cpus=1)
class Receiver:
    """A worker that receives what a message brings: the ClientApp (resolved on arrival) or nothing."""

    def receive(self, app: object) -> int:
        return 0 if app is None else len(type(app).__name__)


def timed_calls(worker: ray.actor.ActorHandle, payload: object, count: int) -> list[float]:
    seconds = []
    for _ in range(count):
        start = time.perf_counter()
        ray.get(worker.receive.remote(payload))
        seconds.append(time.perf_counter() - start)
    return seconds


def join(address: str, ship: bool) -> float:
    """Seconds to join the cluster, with the runtime env Flower passes (PYTHONPATH), shipped by the hook or not."""
    runtime_env = {"env_vars": {"PYTHONPATH": os.pathsep.join(sys.path)}}
    if ship:
        os.environ[ray_cluster.APP_PACKAGE_VARIABLE] = str(ROOT / "warmfed_flwr")
        runtime_env = ray_cluster.ship_app(runtime_env)
    start = time.perf_counter()
    ray.init(address=address, runtime_env=runtime_env, logging_level="WARNING", log_to_driver=False)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=200)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "ray-shipping.json")
    args = parser.parse_args()
    hidden = os.geteuid() == 0
    cluster = LocalRayCluster(cpus_per_node=1)
    record: dict[str, object] = {"messages": args.messages, "second_node_lacks_the_app": hidden,
                                 "client_app_pickled_bytes": len(ray.cloudpickle.dumps(client_app))}
    try:
        cluster.start_head()
        cluster.add_node("second", hide=[ROOT] if hidden else None)
        cluster.wait_for_nodes(2)
        record["join_without_hook_seconds"] = round(join(cluster.address, ship=False), 3)
        ray.shutdown()
        record["join_with_hook_seconds"] = round(join(cluster.address, ship=True), 3)
        second = next(node for node in ray.nodes()
                      if node["Alive"] and not node["Resources"].get("node:__internal_head__"))
        worker = Receiver.options(
            scheduling_strategy=NodeAffinitySchedulingStrategy(second["NodeID"], soft=False)).remote()
        start = time.perf_counter()
        ray.get(worker.receive.remote(client_app))
        record["first_call_on_second_node_seconds"] = round(time.perf_counter() - start, 3)
        with_app = timed_calls(worker, client_app, args.messages)
        without = timed_calls(worker, None, args.messages)
        record["per_message_with_client_app_ms"] = round(1000 * statistics.median(with_app), 3)
        record["per_message_without_ms"] = round(1000 * statistics.median(without), 3)
        ray.shutdown()
    finally:
        cluster.stop()
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record))


if __name__ == "__main__":
    main()
