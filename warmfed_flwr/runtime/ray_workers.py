"""Ray workers that die in a simulation, alone or with their node, cost the run no client.

Flower 1.42's Ray backend (`RayBackend.process_message`) takes an idle worker (a `ClientAppActor`)
from its pool, runs the message on it and puts the worker back, even when the worker's process has
died (killed by the kernel's out-of-memory killer, or lost with its cluster node): every later
message handed to that worker then fails. Its engine also runs one thread per worker the pool
started with, and a thread that finds no idle worker fails its message.

`install()` replaces `process_message` with one that waits for an idle worker and retires a worker
whose process is gone (its actor died or is unreachable, the memory monitor killed it, its node
died), and `terminate` with one that first stops the workers still starting. A fresh worker is
started in its place and joins the idle ones once it is up; until then it is given no message.
When the cluster's live nodes (`ray.nodes()`) hold no more workers than the pool still has, as
when a node was lost, or the fresh worker is not up within ten minutes, it is given up and the
pool goes on smaller, its threads waiting for the workers left. The message that was running on
the dead worker still fails (error code UNKNOWN), and `run.grid.MeteredGrid` asks that client
again. When no worker is left, every message fails with a `NoWorkersLeftError` that names the
nodes lost since the pool was first used.

Installed by the ServerApp, in the process that runs the simulation engine; it does nothing where
Ray or Flower's Ray backend is absent (a deployment's SuperLink).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

from warmfed_flwr.logs import logger
from warmfed_flwr.runtime.ray_cluster import RayNode, client_slots, live_nodes

_installed = threading.Lock()
_sharing = threading.Lock()
_MARK = "_warmfed_retires_dead_workers"


class NoWorkersLeftError(RuntimeError):
    """Every Ray worker died and the cluster's live nodes have no room for a new one."""


# How a starting worker is doing, asked with the most seconds to wait: "up", "starting" or "dead".
WorkerWatch = Callable[[float], str]


@dataclass(frozen=True)
class RayCalls:
    """What the pool asks of Ray: the live nodes, starting a worker (the worker and its watch), stopping one."""

    nodes: Callable[[], list[RayNode]]
    start: Callable[[Any], tuple[Any, WorkerWatch]]
    stop: Callable[[Any], None]


class WorkerPool:
    """Flower's `BasicActorPool` (its idle workers `pool.pool`, their count `pool.num_actors`, `create_actor_fn`,
    `client_resources`) as the engine's threads share it, with dead workers retired and replaced where there is room.
    """

    def __init__(
        self, pool: Any, ray_calls: RayCalls, poll_seconds: float = 2.0, start_seconds: float = 600.0
    ) -> None:
        self.pool = pool
        self.ray = ray_calls
        self.poll_seconds = poll_seconds
        self.start_seconds = start_seconds  # a fresh worker not up by then is given up (a shared cluster may be full)
        self.changed = threading.Condition()
        self.starting = 0  # fresh workers not yet up
        self.fresh: list[Any] = []  # ... and those workers, stopped if the run ends before they are up
        self.closed = False
        self.first_nodes = {node.node_id: node for node in ray_calls.nodes()}

    def room(self) -> int:
        """How many workers with the pool's client resources the live nodes hold."""
        resources = self.pool.client_resources
        return client_slots(self.ray.nodes(), resources.get("num_cpus", 1), resources.get("num_gpus", 0.0))

    def lost_nodes(self) -> str:
        """The nodes alive when the pool was first used and gone now, e.g. '5169dd27 (10.0.0.2)'."""
        alive = {node.node_id for node in self.ray.nodes()}
        lost = [node for node_id, node in self.first_nodes.items() if node_id not in alive]
        return ", ".join(f"{node.short_id} ({node.address})" for node in lost) or "none"

    def take(self) -> Any:
        """An idle worker, taken out of the pool; waits while all are busy or starting. NoWorkersLeftError when no
        worker is left and none is starting."""
        with self.changed:
            while not self.pool.pool:
                if self.pool.num_actors <= 0 and self.starting == 0:
                    raise NoWorkersLeftError(
                        f"no Ray worker is left for the clients (nodes lost: {self.lost_nodes()}): the workers died "
                        f"and the cluster's live nodes have no room for one with {self.pool.client_resources}"
                    )
                self.changed.wait(timeout=1.0)
            return self.pool.pool.pop()

    def give_back(self, worker: Any) -> None:
        """Put a worker that finished its message back among the idle ones."""
        with self.changed:
            self.pool.pool.append(worker)
            self.changed.notify()

    def retire(self, worker: Any) -> threading.Thread:
        """`worker`'s process is gone (or unreachable): stop it for good, so that it frees its resources, and start a
        fresh one in the background (`replace`, in the thread returned)."""
        self.ray.stop(worker)
        with self.changed:
            self.pool.num_actors -= 1
            self.starting += 1
        replacing = threading.Thread(target=self.replace, name="replace-ray-worker", daemon=True)
        replacing.start()
        return replacing

    def replace(self) -> None:
        """Start a fresh worker and add it to the idle ones once it is up; give it up if it does not come up within
        `start_seconds`, if the live nodes fill up first, if Ray fails to start it, or if the run ends (`close`).
        Whatever happens, it stops counting as starting."""
        fresh = None
        try:
            with self.changed:
                if self.closed:
                    return
                fresh, watch = self.ray.start(self.pool)
                self.fresh.append(fresh)
            give_up_at = time.monotonic() + self.start_seconds
            while not self._settled(fresh, watch(self.poll_seconds), time.monotonic() >= give_up_at):
                pass
        except Exception as error:  # Ray failed to start or to watch it: the run goes on without it
            logger.warning("[workers] a fresh Ray worker could not be started (%s: %s)", type(error).__name__, error)
        finally:
            with self.changed:
                if fresh is not None and fresh in self.fresh:  # given up
                    self.fresh.remove(fresh)
                    self.ray.stop(fresh)
                self.starting -= 1
                self.changed.notify_all()

    def _settled(self, fresh: Any, state: str, too_late: bool) -> bool:
        """Act on a starting worker's `state`; True once it joined the idle workers or is to be given up."""
        with self.changed:
            if self.closed:  # `close` stopped it
                return True
            if state == "up":
                self.fresh.remove(fresh)
                self.pool.pool.append(fresh)
                self.pool.num_actors += 1
                logger.warning("[workers] a Ray worker died; a new worker replaces it")
                return True
            if state == "dead" or too_late or self.room() <= self.pool.num_actors:
                logger.warning("[workers] a Ray worker died and no new one could start (nodes lost: %s); %d "
                               "workers go on", self.lost_nodes(), self.pool.num_actors)
                return True
            return False  # starting, and there is room for it: wait on

    def close(self) -> None:
        """The run ends: stop the workers still starting, and start no more (the idle ones are Flower's to end)."""
        with self.changed:
            self.closed = True
            for fresh in self.fresh:
                self.ray.stop(fresh)
            self.fresh.clear()
            self.changed.notify_all()


def _start_worker(ray: Any, pool: Any) -> tuple[Any, WorkerWatch]:
    """A fresh worker of `pool`, and its watch: whether it answered, within the seconds given, or died."""
    worker = pool.create_actor_fn()
    ready = worker.__ray_ready__.remote()

    def watch(seconds: float) -> str:
        done, _ = ray.wait([ready], timeout=seconds)
        if not done:
            return "starting"
        try:
            ray.get(ready)
        except ray.exceptions.RayError:  # died, ran out of memory, its runtime env failed, unschedulable, ...
            return "dead"
        return "up"

    return worker, watch


def _shared_pool(backend: Any, ray_calls: RayCalls) -> WorkerPool:
    """The backend's pool as its threads share it (made once per pool)."""
    with _sharing:
        shared = getattr(backend, "_warmfed_worker_pool", None)
        if shared is None or shared.pool is not backend.pool:
            shared = WorkerPool(backend.pool, ray_calls)
            backend._warmfed_worker_pool = shared
        return shared


def install() -> None:
    """Replace Flower's RayBackend.process_message once per process (no-op without Ray)."""
    try:
        import ray
        from flwr.common.constant import PARTITION_ID_KEY
        from flwr.server.superlink.fleet.vce.backend.raybackend import RayBackend
    except ImportError:
        return
    # errors that mean the worker's process is gone: its actor died or is unreachable, the memory monitor killed it,
    # its node died
    WORKER_GONE = (ray.exceptions.RayActorError, ray.exceptions.OutOfMemoryError, ray.exceptions.WorkerCrashedError,
                   ray.exceptions.NodeDiedError)
    original = RayBackend.process_message
    original_terminate = RayBackend.terminate
    ray_calls = RayCalls(
        nodes=lambda: live_nodes(ray.nodes()),
        start=lambda pool: _start_worker(ray, pool),
        stop=lambda worker: ray.kill(worker, no_restart=True),
    )

    def process_message(self: Any, message: Any, context: Any) -> Any:
        if self.pool is None or self.app_fn is None:
            return original(self, message, context)  # Flower's own error for a backend that was not built
        partition = str(context.node_config[PARTITION_ID_KEY])
        workers = _shared_pool(self, ray_calls)
        worker = workers.take()
        try:
            _, reply, updated_context = ray.get(worker.run.remote(self.app_fn, message, partition, context))
        except WORKER_GONE:
            workers.retire(worker)
            raise
        except BaseException:
            workers.give_back(worker)
            raise
        workers.give_back(worker)
        return reply, updated_context

    def terminate(self: Any) -> None:
        shared = getattr(self, "_warmfed_worker_pool", None)
        if shared is not None:
            shared.close()
        original_terminate(self)

    setattr(process_message, _MARK, True)
    with _installed:
        if not getattr(RayBackend.process_message, _MARK, False):
            RayBackend.process_message = process_message
            RayBackend.terminate = terminate
