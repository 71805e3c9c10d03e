"""Infrastructure faults at 20-60 clients: a Ray worker killed mid-phase is replaced and its client asked again;
clients that raise are not retried and are recorded, exactly those."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Callable

import pytest

from flwr.app import Context, Message

from warmfed_flwr.client.app import HANDLERS, Handler, build_client_app
from warmfed_flwr.client.context import partition_id
from warmfed_flwr.runtime.ray_cluster import RayNode
from warmfed_flwr.runtime.ray_workers import NoWorkersLeftError, RayCalls, WorkerPool

SCARCE = {"data.clients-per-domain": 5, "data.min-train-images": 5, "min-clients": 20, "rounds": 0, "timeout": 120.0}
SIXTY = {"data.clients-per-domain": 15, "data.min-train-images": 5, "min-clients": 50, "rounds": 0, "timeout": 300.0}


def killing_its_worker(message_type: str, victim: int, marker: Path) -> Handler:
    """The phase's handler, except that the first time it serves partition `victim` it SIGKILLs its own
    process (the Ray worker), as the kernel's out-of-memory killer would; the retry then runs normally."""
    handler = HANDLERS[message_type]

    def faulty(msg: Message, context: Context) -> Message:
        if partition_id(context) == victim and not marker.exists():
            marker.write_text(str(os.getpid()))
            os.kill(os.getpid(), signal.SIGKILL)
        return handler(msg, context)

    return faulty


def raising_for(message_type: str, victims: set[int]) -> Handler:
    handler = HANDLERS[message_type]

    def faulty(msg: Message, context: Context) -> Message:
        if partition_id(context) in victims:
            raise RuntimeError(f"simulated error of partition {partition_id(context)}")
        return handler(msg, context)

    return faulty


def test_a_worker_killed_in_lora_and_one_in_dsd_cost_no_client(run_in_process: Callable, tmp_path: Path) -> None:
    app = build_client_app({
        **HANDLERS,
        "train.lora": killing_its_worker("train.lora", 3, tmp_path / "killed-in-lora"),
        "train.dsd": killing_its_worker("train.dsd", 11, tmp_path / "killed-in-dsd"),
    })
    results = run_in_process({**SCARCE, "method": "warmfed"}, num_supernodes=20, client_app=app)
    assert (tmp_path / "killed-in-lora").exists() and (tmp_path / "killed-in-dsd").exists()
    assert results["failures"] == []
    assert [(r["phase"], r["partition_id"], r["attempt"]) for r in results["retries"]] == [("lora", 3, 1), ("dsd", 11, 1)]
    assert all(r["reason"].startswith("worker failed") and "ActorDiedError" in r["reason"] for r in results["retries"])
    assert len(results["clients"]) == 20
    assert all(c["details"]["adapter_bytes"] > 0 and c["personal_acc"] is not None for c in results["clients"])


def test_sixty_clients_six_raising_in_lora_are_recorded_and_not_retried(run_in_process: Callable) -> None:
    raising = {4, 17, 23, 38, 41, 59}
    app = build_client_app({**HANDLERS, "train.lora": raising_for("train.lora", raising)})
    results = run_in_process({**SIXTY, "method": "warmfed"}, num_supernodes=60, client_app=app)
    failures = {f["partition_id"]: f for f in results["failures"]}
    assert set(failures) == raising and all(f["phase"] == "lora" for f in failures.values())
    assert all("simulated error of partition" in f["reason"] for f in failures.values())
    assert results["retries"] == []
    adapters = {c["partition_id"] for c in results["clients"] if "adapter_bytes" in c["details"]}
    assert adapters == set(range(60)) - raising
    assert all(c["personal_acc"] is not None for c in results["clients"])  # DSD also for clients without adapter


class FakePool:
    """What `WorkerPool` reads of Flower's BasicActorPool."""

    def __init__(self, workers: list[str]) -> None:
        self.pool = list(workers)
        self.num_actors = len(workers)
        self.client_resources = {"num_cpus": 1, "num_gpus": 0.0}
        self.create_actor_fn = lambda: "fresh"


class FakeRay:
    """The cluster as `WorkerPool` sees it: live nodes that can be lost, workers that come up after some polls."""

    def __init__(self, nodes: list[RayNode], polls_to_start: int = 1, dies: bool = False) -> None:
        self.live = list(nodes)
        self.polls_to_start = polls_to_start
        self.dies = dies
        self.stopped: list[str] = []

    def start(self, pool: FakePool) -> tuple[str, Callable[[float], str]]:
        polls = iter(["starting"] * (self.polls_to_start - 1) + ["dead" if self.dies else "up"])
        return pool.create_actor_fn(), lambda seconds: next(polls, "dead" if self.dies else "up")

    def calls(self) -> RayCalls:
        return RayCalls(nodes=lambda: list(self.live), start=self.start, stop=self.stopped.append)


def two_nodes() -> list[RayNode]:
    return [RayNode("a" * 56, "10.0.0.1", 1.0, 0.0), RayNode("b" * 56, "10.0.0.2", 1.0, 0.0)]


def test_a_dead_worker_is_replaced_once_the_fresh_one_is_up() -> None:
    ray, pool = FakeRay(two_nodes(), polls_to_start=3), FakePool(["w1", "w2"])
    workers = WorkerPool(pool, ray.calls(), poll_seconds=0.0)
    taken = workers.take()
    workers.retire(taken).join()
    assert ray.stopped == [taken]  # stopped for good, so that it frees its resources
    assert pool.pool == ["w1", "fresh"] and pool.num_actors == 2 and workers.starting == 0


def test_a_worker_lost_with_its_node_shrinks_the_pool_and_the_last_loss_names_the_node() -> None:
    nodes = two_nodes()
    ray, pool = FakeRay(nodes, polls_to_start=10**6), FakePool(["w1", "w2"])
    workers = WorkerPool(pool, ray.calls(), poll_seconds=0.0)
    worker_on_b = workers.take()
    ray.live = [nodes[0]]  # node b is gone: the live nodes hold one worker, the pool still has one
    workers.retire(worker_on_b).join()
    assert pool.pool == ["w1"] and pool.num_actors == 1 and ray.stopped == [worker_on_b, "fresh"]
    ray.live = []
    workers.retire(workers.take()).join()
    with pytest.raises(NoWorkersLeftError, match="nodes lost: a{8} \\(10.0.0.1\\), b{8} \\(10.0.0.2\\)"):
        workers.take()


def test_a_replacement_that_dies_while_starting_is_given_up() -> None:
    ray, pool = FakeRay(two_nodes(), dies=True), FakePool(["w1"])
    workers = WorkerPool(pool, ray.calls(), poll_seconds=0.0)
    workers.retire(workers.take()).join()
    with pytest.raises(NoWorkersLeftError, match="nodes lost: none"):
        workers.take()


def test_a_replacement_still_starting_when_the_run_ends_is_stopped() -> None:
    ray, pool = FakeRay(two_nodes(), polls_to_start=10**6), FakePool(["w1", "w2"])
    workers = WorkerPool(pool, ray.calls(), poll_seconds=0.0)
    replacing = workers.retire(workers.take())
    while not workers.fresh:  # the fresh worker has been started
        replacing.join(timeout=0.01)
    workers.close()
    replacing.join()
    assert ray.stopped == ["w2", "fresh"] and pool.pool == ["w1"] and workers.starting == 0


def test_a_replacement_that_does_not_come_up_in_time_or_cannot_be_started_is_given_up() -> None:
    ray, pool = FakeRay(two_nodes(), polls_to_start=10**6), FakePool(["w1", "w2"])
    workers = WorkerPool(pool, ray.calls(), poll_seconds=0.0, start_seconds=0.05)
    workers.retire(workers.take()).join()  # room for it, but it never comes up
    assert ray.stopped == ["w2", "fresh"] and pool.pool == ["w1"] and workers.starting == 0

    def refuse(pool: FakePool) -> None:
        raise RuntimeError("runtime env setup failed")

    broken = RayCalls(nodes=lambda: two_nodes(), start=refuse, stop=ray.stopped.append)
    workers = WorkerPool(FakePool(["w1"]), broken, poll_seconds=0.0)
    workers.retire(workers.take()).join()
    with pytest.raises(NoWorkersLeftError):  # no worker left, none starting: the run is told, it does not hang
        workers.take()
