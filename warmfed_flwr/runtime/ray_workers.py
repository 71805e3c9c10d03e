"""A Ray worker that dies in a simulation is replaced, so the clients queued behind it are not lost.

Flower 1.42's Ray backend (`RayBackend.process_message`) puts the worker (a `ClientAppActor`) back
into its pool even when the worker's process has died, killed by the kernel's out-of-memory
killer for instance. Every later message the pool hands to that worker then fails with
`ActorDiedError`: one death costs every client routed there for the rest of the run. This module
wraps `process_message` so that a worker that died is taken out of the pool and a fresh one takes
its place; the message that was running on it still fails (with error code UNKNOWN), and
`run.grid.MeteredGrid` asks that client again.

Installed by the ServerApp (`install()`), in the process that runs the simulation engine; it does
nothing where Ray or Flower's Ray backend is absent (a deployment's SuperLink).
"""

from __future__ import annotations

import threading
from typing import Any

from warmfed_flwr.logs import logger

_installed = threading.Lock()
_MARK = "_warmfed_replaces_dead_workers"


def replace_dead_worker(pool: Any, dead_actor_id: str) -> bool:
    """Swap the pool's idle actor with id `dead_actor_id` (hex) for a freshly created one; False if not there.

    Other threads take actors from the pool meanwhile, so the dead one is removed by identity (one
    atomic list operation): if another thread took it first, its message fails too and that thread
    replaces it."""
    for actor in list(pool.pool):
        if actor._actor_id.hex() == dead_actor_id:  # Ray keeps an actor handle's id only here
            try:
                pool.pool.remove(actor)
            except ValueError:
                return False
            pool.pool.append(pool.create_actor_fn())
            return True
    return False


def install() -> None:
    """Wrap Flower's RayBackend.process_message once per process (no-op without Ray)."""
    try:
        import ray
        from flwr.server.superlink.fleet.vce.backend.raybackend import RayBackend
    except ImportError:
        return
    with _installed:
        if getattr(RayBackend.process_message, _MARK, False):
            return
        original = RayBackend.process_message

        def process_message(self: Any, message: Any, context: Any) -> Any:
            try:
                return original(self, message, context)
            except ray.exceptions.RayActorError as error:
                dead = getattr(error, "actor_id", None)
                if dead and self.pool is not None and replace_dead_worker(self.pool, dead):
                    logger.warning("[workers] a Ray worker died (%s); a new worker replaces it",
                        type(error).__name__)
                raise

        setattr(process_message, _MARK, True)
        RayBackend.process_message = process_message
