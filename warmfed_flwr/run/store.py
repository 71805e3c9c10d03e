"""One store for what the warm start produces: the clients' adapters, the synthetic pool, the warm-started model.

A product is looked up in this run's checkpoint first (a resumed run), then, for adapters and the
pool, in the shared cache (`cache-dir`: an earlier run with the settings that produce the same
thing), and only then computed; what is used is saved to the checkpoint, and complete adapters or
a pool that were computed also to the cache. A product reused from the cache is recorded as if
its phase ran (its bytes and seconds). A checkpointed pool (`checkpointed_pool`) makes the
adapters unnecessary, so it is asked for first.

Adapters live on disk, in the run's checkpoint, from the moment each arrives: the server holds only
those of one pull of replies (the ones that arrived since the last, every 0.1 s in a simulation), not
all of them (a thousand clients' adapters of the default size are about 1 GB), and generation reads
each when it comes to its client (`ClientAdapter.arrays`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

from flwr.app import ArrayRecord

from warmfed_flwr.data.types import ImageSplit
from warmfed_flwr.generative.base import Adapter
from warmfed_flwr.logs import logger
from warmfed_flwr.run.artifacts import ArtifactCache, adapter_key, cache_key, pool_key
from warmfed_flwr.run.checkpoint import ResumeError
from warmfed_flwr.run.context import RunContext
from warmfed_flwr.run.federation import ClientInfo


@dataclass(frozen=True)
class ClientAdapter:
    """A client's validated adapter, stored under `key` in the run's checkpoint `store`, and the label counts the
    client reported (None when withheld)."""

    client: ClientInfo
    label_counts: list[int] | None
    store: ArtifactCache
    key: str

    def arrays(self) -> Adapter:
        """The adapter's tensors, read from the checkpoint."""
        return self.store.load_adapter(self.key, self.client.partition_id)[0]


# Keeps one received adapter (its client, tensors and label counts): stores it and returns it as the run keeps it.
KeepAdapter = Callable[[ClientInfo, Adapter, list[int] | None], ClientAdapter]


# A client's share of the synthetic pool.
Share = tuple[ClientInfo, ImageSplit]


def clients_by_partition(clients: list[ClientInfo], needed: Mapping[int, object]) -> dict[int, ClientInfo]:
    """The discovered clients by partition id; a ResumeError names any partition in `needed` that is missing."""
    by_pid = {c.partition_id: c for c in clients}
    missing = sorted(set(needed) - by_pid.keys())
    if missing:
        raise ResumeError(
            f"config key 'resume': partitions {missing} have checkpointed artifacts but did not connect this time"
        )
    return by_pid


class WarmStartStore:
    """The checkpoint, then the cache, then the computation, for each product of the warm start."""

    def __init__(self, run: RunContext) -> None:
        self.run = run
        self.checkpoint, self.recorder = run.checkpoint, run.recorder
        cache_dir = run.settings.cache_dir
        self.cache = ArtifactCache(Path(cache_dir).expanduser().resolve()) if cache_dir else None

    def adapters(self, collect: Callable[[KeepAdapter], list[ClientAdapter]]) -> tuple[list[ClientAdapter], str]:
        """Phase `lora`'s adapters (`collect` runs the phase, keeping each adapter as it arrives) and their key."""
        ckpt, clients = self.checkpoint, self.run.clients
        done = ckpt.entry("lora")
        if done is not None:
            return self._restored_adapters(done["key"], done["partitions"]), done["key"]
        pids = [c.partition_id for c in clients]
        key = adapter_key(self.run.settings, pids)
        if self.cache and self.cache.has_adapters(key, pids):
            adapters = self._reused_adapters(self.cache, key)
        else:
            adapters = self._collected_adapters(collect, key)
        ckpt.mark("lora", self.recorder, key=key, partitions=[a.client.partition_id for a in adapters])
        return adapters, key

    def _keeper(self, key: str) -> KeepAdapter:
        """Stores an adapter in the run's checkpoint under `key`."""
        store = self.checkpoint.store

        def keep(client: ClientInfo, arrays: Adapter, label_counts: list[int] | None) -> ClientAdapter:
            store.save_adapter(key, client.partition_id, arrays, {"label_counts": label_counts})
            return ClientAdapter(client, label_counts, store, key)

        return keep

    def checkpointed_pool(self) -> list[Share] | None:
        """The synthetic pool a resumed run's checkpoint holds, None when phase `warmstart-generate` is not in it."""
        done = self.checkpoint.entry("warmstart-generate")
        if done is None:
            return None
        stored = self.checkpoint.store.load_pool(done["key"])
        if stored is None:
            raise ResumeError(f"config key 'resume': the synthetic pool is missing from {self.checkpoint.store.root}")
        by_pid = clients_by_partition(self.run.clients, stored[0])
        return [(by_pid[pid], share) for pid, share in sorted(stored[0].items())]

    def pool(self, clients: list[ClientInfo], source_key: str, generate: Callable[[], list[Share]]) -> list[Share]:
        """Phase `warmstart-generate`'s pool for `clients`, generated from what `source_key` names."""
        key = pool_key(self.run.settings, cache_key(source_key, sorted(c.partition_id for c in clients)))
        cached = self.cache.load_pool(key) if self.cache else None
        if cached is not None:
            by_pid, seconds = cached
            shares = [(client, by_pid[client.partition_id]) for client in clients]
            for client, share in shares:
                self.recorder.clients[client.partition_id].details["synthetic_images"] = len(share)
            self.recorder.add_cached_phase("warmstart-generate", seconds)
        else:
            with self.recorder.phase("warmstart-generate"):
                shares = generate()
            seconds = self.recorder.phases[-1]["seconds"]
            if self.cache:
                self.cache.save_pool(key, {c.partition_id: share for c, share in shares}, seconds)
        self.checkpoint.store.save_pool(key, {c.partition_id: share for c, share in shares}, seconds)
        self.checkpoint.mark("warmstart-generate", self.recorder, key=key)
        return shares

    def model(self, phase: str, train: Callable[[], ArrayRecord]) -> ArrayRecord:
        """The model phase `phase` trains (`train` runs it), or the one the checkpoint holds from it."""
        ckpt = self.checkpoint
        done = ckpt.entry(phase)
        if done is not None:
            return ckpt.model(done["model"])
        with self.recorder.phase(phase):
            arrays = train()
        ckpt.mark(phase, self.recorder, model=ckpt.save_model(phase, arrays))
        return arrays

    def _restored_adapters(self, key: str, partitions: list[int]) -> list[ClientAdapter]:
        """The adapters the checkpoint holds from phase `lora`, in partition order."""
        store = self.checkpoint.store
        if not store.has_adapters(key, partitions):
            raise ResumeError(
                f"config key 'resume': adapters of phase 'lora' are missing from {self.checkpoint.store.root}"
            )
        by_pid = clients_by_partition(self.run.clients, dict.fromkeys(partitions))
        return [ClientAdapter(by_pid[pid], store.adapter_info(key, pid)["label_counts"], store, key)
                for pid in sorted(partitions)]

    def _collected_adapters(
        self, collect: Callable[[KeepAdapter], list[ClientAdapter]], key: str
    ) -> list[ClientAdapter]:
        """Run phase `lora`; a complete, failure-free set of adapters also goes to the cache, one adapter at a time."""
        rec, clients = self.recorder, self.run.clients
        before = {c.partition_id: (rec.clients[c.partition_id].bytes_up, rec.clients[c.partition_id].bytes_down)
                  for c in clients}
        with rec.phase("lora"):
            adapters = collect(self._keeper(key))
        if self.cache and len(adapters) == len(clients):
            for a in adapters:
                pid = a.client.partition_id
                info = {
                    "label_counts": a.label_counts,
                    "fit_seconds": rec.clients[pid].details["fit_seconds"],
                    "adapter_bytes": rec.clients[pid].details["adapter_bytes"],
                    "dp": {k: v for k, v in rec.clients[pid].details.items() if k.startswith("dp_")},
                    "bytes_up": rec.clients[pid].bytes_up - before[pid][0],
                    "bytes_down": rec.clients[pid].bytes_down - before[pid][1],
                    "phase_seconds": rec.phases[-1]["seconds"],
                }
                self.cache.save_adapter(key, pid, a.arrays(), info)
        return adapters

    def _reused_adapters(self, cache: ArtifactCache, key: str) -> list[ClientAdapter]:
        """`cache`'s adapters, copied into the checkpoint one at a time, with the bytes and seconds they cost recorded
        as if the phase ran."""
        keep, adapters, phase_seconds = self._keeper(key), [], 0.0
        for client in self.run.clients:
            arrays, info = cache.load_adapter(key, client.partition_id)
            result = self.recorder.clients[client.partition_id]
            result.bytes_up += int(info["bytes_up"])
            result.bytes_down += int(info["bytes_down"])
            result.details["adapter_bytes"] = int(info["adapter_bytes"])  # as sent
            result.details["fit_seconds"] = info["fit_seconds"]
            result.details |= info.get("dp", {})  # adapters cached before DP existed have none
            counts = info["label_counts"] if self.run.settings.lora.send_label_counts else None
            adapters.append(keep(client, arrays, counts))
            phase_seconds = float(info["phase_seconds"])
        self.recorder.add_cached_phase("lora", phase_seconds)
        logger.info("[lora] reusing %d cached adapters from %s", len(adapters), cache.root)
        return adapters
