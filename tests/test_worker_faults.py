"""Infrastructure faults at 20-60 clients: a Ray worker killed mid-phase is replaced and its client asked again;
clients that raise are not retried and are recorded, exactly those."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from types import SimpleNamespace
from typing import Callable

from flwr.app import Context, Message

from warmfed_flwr.client import HANDLERS, Handler, build_client_app, partition_id
from warmfed_flwr.runtime.ray_workers import replace_dead_worker

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


class FakeWorker:
    """What `replace_dead_worker` reads of a Ray actor handle: its id."""

    def __init__(self, hex_id: str) -> None:
        self._actor_id = SimpleNamespace(hex=lambda: hex_id)


class TakenMeanwhile(list):
    """A pool list from which another thread takes the dead worker between the search and the removal."""

    def remove(self, worker: object) -> None:
        raise ValueError(worker)


def test_a_dead_worker_is_swapped_by_identity_unless_another_thread_took_it() -> None:
    pool = SimpleNamespace(pool=[FakeWorker("a"), FakeWorker("b")], create_actor_fn=lambda: FakeWorker("fresh"))
    assert replace_dead_worker(pool, "a")
    assert [worker._actor_id.hex() for worker in pool.pool] == ["b", "fresh"]
    assert not replace_dead_worker(pool, "gone")
    pool.pool = TakenMeanwhile(pool.pool)
    assert not replace_dead_worker(pool, "b")  # its taker's message fails and that thread replaces it
    assert [worker._actor_id.hex() for worker in pool.pool] == ["b", "fresh"]
