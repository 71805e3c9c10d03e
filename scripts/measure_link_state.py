"""One sweep of Flower's simulation engine over its in-memory LinkState, with Flower's lookup and with ours.

    python scripts/measure_link_state.py [--clients 100 300 1000] [--out benchmarks/link-state-sweep.json]

Flower's engine asks the LinkState for the next message of every simulated node every 0.1 s
(`vce_api.add_messages_to_queue`). Here N nodes each have one message in flight, delivered by the
first sweep; the later sweeps find nothing, as while the clients work. Prints, per N, the seconds of
the first sweep and the median of the next three, for Flower's `get_message_ins` and for
`warmfed_flwr/runtime/link_state.py`'s (each in a fresh process), and writes them to --out.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from flwr.app import Message, RecordDict
from flwr.common.constant import RUN_ID_NUM_BYTES, SUPERLINK_NODE_ID, TASK_ID_NUM_BYTES
from flwr.proto.task_pb2 import Task  # pylint: disable=no-name-in-module
from flwr.server.superlink.fleet.vce.vce_api import _register_nodes
from flwr.server.superlink.linkstate import LinkStateFactory
from flwr.server.superlink.linkstate.in_memory_linkstate import InMemoryLinkState, RunRecord
from flwr.server.superlink.linkstate.utils import generate_rand_int_from_bytes
from flwr.supercore.constant import FLWR_IN_MEMORY_DB_NAME, NOOP_FEDERATION_ID
from flwr.supercore.object_store import ObjectStoreFactory
from flwr.supercore.run import Run
from flwr.supercore.task_identity import TaskIdentity
from flwr.superlink.federation import NoOpFederationManager
from flwr.superlink.grid import InMemoryGrid

ROOT = Path(__file__).resolve().parents[1]


def federation(num_nodes: int) -> tuple[InMemoryLinkState, InMemoryGrid, list[int]]:
    """An in-memory LinkState with `num_nodes` simulated nodes and a run, as Flower's simulation engine makes them."""
    factory = LinkStateFactory(FLWR_IN_MEMORY_DB_NAME, NoOpFederationManager(simulation=True), ObjectStoreFactory())
    nodes = list(_register_nodes(num_nodes, factory))
    state = factory.state()
    run = Run.create_empty(run_id=generate_rand_int_from_bytes(RUN_ID_NUM_BYTES))
    run.federation_id = NOOP_FEDERATION_ID
    run.primary_task_id = generate_rand_int_from_bytes(TASK_ID_NUM_BYTES)
    state.run_ids[run.run_id] = RunRecord(run=run)
    state.task_store[run.primary_task_id] = Task(task_id=run.primary_task_id, run_id=run.run_id)
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, run.run_id, SUPERLINK_NODE_ID
    grid = InMemoryGrid(factory)
    grid.set_run(run)
    return state, grid, nodes


def sweep_seconds(num_nodes: int) -> list[float]:
    """Seconds of four sweeps over `num_nodes` nodes with one message each in flight."""
    state, grid, nodes = federation(num_nodes)
    grid.push_messages([Message(RecordDict(), dst_node_id=node, message_type="train") for node in nodes])
    seconds = []
    for _ in range(4):
        start = time.perf_counter()
        for node in nodes:
            state.get_message_ins(node_id=node, limit=1)
        seconds.append(time.perf_counter() - start)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, nargs="+", default=[100, 300, 1000])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "link-state-sweep.json")
    parser.add_argument("--one", nargs=2, metavar=("LOOKUP", "CLIENTS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:  # a child process: one lookup, one size
        if args.one[0] == "indexed":
            from warmfed_flwr.runtime import link_state

            link_state.install()
        print(json.dumps(sweep_seconds(int(args.one[1]))))
        return
    rows = []
    for clients in args.clients:
        for lookup in ("flower", "indexed"):
            child = subprocess.run([sys.executable, __file__, "--one", lookup, str(clients)],
                                   capture_output=True, text=True, check=True)
            seconds = json.loads(child.stdout.strip().splitlines()[-1])
            rows.append({"clients": clients, "lookup": lookup, "first_sweep_seconds": round(seconds[0], 5),
                         "later_sweep_seconds": round(statistics.median(seconds[1:]), 5)})
    args.out.write_text(json.dumps(rows, indent=2) + "\n")
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
