"""WarmFedStrategy: LoRA adapters -> synthetic warm-start pool -> global model -> optional rounds -> DSD.

Import it into your own `server_app.py` and pass any `flwr.serverapp.strategy.Strategy` (in a
`StrategyRun`, with what its `start` takes) to run the optional FedAvg-style rounds with it (see README).
With `use_adapters=False` it is the FGL baseline: the server generates from the base model with
class conditioning only, and clients send nothing in the first phase.
Each phase's result is checkpointed in the run directory; a phase the checkpoint holds is not run again.
With `snapshot-rounds`, the results of shorter runs (round 0: one-shot) are recorded on the way
(warmfed_flwr/run/snapshots.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import torch
from flwr.app import ArrayRecord

from warmfed_flwr.data.types import ImageSplit
from warmfed_flwr.generative.adapter import adapter_bytes
from warmfed_flwr.generative.base import Adapter
from warmfed_flwr.logs import logger
from warmfed_flwr.phases.lora import ClientAdapter, collect_adapters
from warmfed_flwr.phases.personalize import personalize
from warmfed_flwr.phases.rounds import StrategyRun, make_aggregation, run_rounds
from warmfed_flwr.phases.warmstart import Share, Source, generate_pool, pool_fine_tuning, save_samples, train_on_pool
from warmfed_flwr.run.artifacts import ArtifactCache, adapter_key, base_source_key, cache_key, pool_key
from warmfed_flwr.run.checkpoint import ResumeError
from warmfed_flwr.run.context import RunContext
from warmfed_flwr.run.federation import ClientInfo
from warmfed_flwr.run.snapshots import SnapshotTaker
from warmfed_flwr.run.transport import model_to_record
from warmfed_flwr.runtime.heap import release_freed_memory


def clients_by_partition(clients: list[ClientInfo], needed: Mapping[int, object]) -> dict[int, ClientInfo]:
    """The discovered clients by partition id; a ResumeError names any partition in `needed` that is missing."""
    by_pid = {c.partition_id: c for c in clients}
    missing = sorted(set(needed) - by_pid.keys())
    if missing:
        raise ResumeError(
            f"config key 'resume': partitions {missing} have checkpointed artifacts but did not connect this time"
        )
    return by_pid


class WarmFedStrategy:
    """Runs WarmFed's phases on a run's clients and records everything in its recorder."""

    def __init__(self, run: RunContext, round_strategy: StrategyRun | None = None, use_adapters: bool = True) -> None:
        self.run_context = run
        self.settings = run.settings
        self.recorder = run.recorder
        self.checkpoint = run.checkpoint
        self.round_strategy = round_strategy
        self.use_adapters = use_adapters
        cache_dir = run.settings.cache_dir
        self.cache = ArtifactCache(Path(cache_dir).expanduser().resolve()) if cache_dir else None

    def run(self) -> ArrayRecord:
        """The method's steps; returns the final global model's arrays."""
        run = self.run_context
        pool = self.synthetic_pool()  # 1. client adapters -> 2. the server's synthetic pool
        arrays = self.warm_start_model(pool)  # 2. the warm-started global model
        server_update = pool_fine_tuning(run, pool)
        del pool  # from here only server_update needs it: freed now unless server.round-epochs > 0
        release_freed_memory()  # the generation and warm-start peak, not held through the rounds and DSD

        def distill(global_arrays: ArrayRecord, phase: str) -> None:
            personalize(run, global_arrays, self.settings.dsd.mode, phase)

        if self.settings.rounds > 0:  # optional rounds of any Flower strategy
            snapshots = SnapshotTaker(self.recorder, self.settings.snapshot_rounds, distill)
            if self.checkpoint.entry("rounds") is None and self.checkpoint.entry("round") is None:
                snapshots(0, arrays)
            plan = self.round_strategy or StrategyRun(make_aggregation(self.settings, len(run.clients)))
            arrays = run_rounds(run, plan, arrays, server_update, after_round=snapshots)
        self.checkpoint.once("dsd", self.recorder, lambda: distill(arrays, "dsd"))  # 3. personalization
        return arrays

    def synthetic_pool(self) -> ImageSplit:
        """The warm-start data: every client's share of synthetic images in one split (samples.png drawn on the way)."""
        shares = self.warm_start_pool()
        save_samples(self.run_context, shares)
        return ImageSplit(torch.cat([s.images for _, s in shares]), torch.cat([s.labels for _, s in shares]))

    def warm_start_pool(self) -> list[Share]:
        """Phases `lora` and `warmstart-generate` (each from the checkpoint, the cache, or run); the pool's shares."""
        done = self.checkpoint.entry("warmstart-generate")
        if done is not None:
            stored = self.checkpoint.store.load_pool(done["key"])
            if stored is None:
                raise ResumeError(f"config key 'resume': the synthetic pool is missing from {self.checkpoint.store.root}")
            by_pid = clients_by_partition(self.run_context.clients, stored[0])
            return [(by_pid[pid], share) for pid, share in sorted(stored[0].items())]
        clients = self.run_context.clients
        if self.use_adapters:
            adapters, source_key = self.adapters_for(clients)
            sources: list[Source] = [(a.client, a.arrays, a.label_counts) for a in adapters]
        else:
            source_key = base_source_key(self.settings, [c.partition_id for c in clients])
            sources = [(c, None, None) for c in clients]
        return self.pool_for(sources, source_key)

    def warm_start_model(self, pool: ImageSplit) -> ArrayRecord:
        """Phase `warmstart-train` (or the model the checkpoint holds from it): the warm-started global model."""
        rec, ckpt = self.recorder, self.checkpoint
        done = ckpt.entry("warmstart-train")
        if done is not None:
            return ckpt.model(done["model"])
        with rec.phase("warmstart-train"):
            model = train_on_pool(self.run_context, pool)
        arrays = model_to_record(model.cpu())
        ckpt.mark("warmstart-train", rec, model=ckpt.save_model("warmstart-train", arrays))
        return arrays

    def adapters_for(self, clients: list[ClientInfo]) -> tuple[list[ClientAdapter], str]:
        """Phase `lora`, from the checkpoint, the cache, or run; returns the adapters and their key."""
        s, ckpt = self.settings, self.checkpoint
        done = ckpt.entry("lora")
        if done is not None:
            return self.restore_adapters(clients, done["key"], done["partitions"]), done["key"]
        pids = [c.partition_id for c in clients]
        key = adapter_key(s, pids)
        cached = self.cache.load_adapters(key, pids) if self.cache else None
        adapters = self.reuse_adapters(clients, cached) if cached is not None else self.run_lora(clients, key)
        for a in adapters:
            ckpt.store.save_adapter(key, a.client.partition_id, a.arrays, {"label_counts": a.label_counts})
        ckpt.mark("lora", self.recorder, key=key, partitions=[a.client.partition_id for a in adapters])
        return adapters, key

    def restore_adapters(self, clients: list[ClientInfo], key: str, partitions: list[int]) -> list[ClientAdapter]:
        """The adapters the checkpoint holds from phase `lora`, in partition order."""
        stored = self.checkpoint.store.load_adapters(key, partitions)
        if stored is None:
            raise ResumeError(
                f"config key 'resume': adapters of phase 'lora' are missing from {self.checkpoint.store.root}"
            )
        by_pid = clients_by_partition(clients, stored)
        return [ClientAdapter(by_pid[pid], arrays, info["label_counts"]) for pid, (arrays, info) in sorted(stored.items())]

    def run_lora(self, clients: list[ClientInfo], key: str) -> list[ClientAdapter]:
        """Phase `lora`: collect the adapters; a complete set also goes to the cache."""
        rec = self.recorder
        pids = [c.partition_id for c in clients]
        before = {pid: (rec.clients[pid].bytes_up, rec.clients[pid].bytes_down) for pid in pids}
        with rec.phase("lora"):
            adapters = collect_adapters(self.run_context)
        if self.cache and len(adapters) == len(clients):  # only complete, failure-free sets are reused
            for a in adapters:
                pid = a.client.partition_id
                info = {
                    "label_counts": a.label_counts,
                    "fit_seconds": rec.clients[pid].details["fit_seconds"],
                    "bytes_up": rec.clients[pid].bytes_up - before[pid][0],
                    "bytes_down": rec.clients[pid].bytes_down - before[pid][1],
                    "phase_seconds": rec.phases[-1]["seconds"],
                }
                self.cache.save_adapter(key, pid, a.arrays, info)
        return adapters

    def reuse_adapters(self, clients: list[ClientInfo], cached: dict[int, tuple[Adapter, dict]]) -> list[ClientAdapter]:
        """Cached adapters, with the bytes and seconds they cost recorded as if the phase ran."""
        adapters = []
        for client in clients:
            arrays, info = cached[client.partition_id]
            result = self.recorder.clients[client.partition_id]
            result.bytes_up += int(info["bytes_up"])
            result.bytes_down += int(info["bytes_down"])
            result.details["adapter_bytes"] = adapter_bytes(arrays)
            result.details["fit_seconds"] = info["fit_seconds"]
            counts = info["label_counts"] if self.settings.lora.send_label_counts else None
            adapters.append(ClientAdapter(client, arrays, counts))
        self.recorder.add_cached_phase("lora", float(next(iter(cached.values()))[1]["phase_seconds"]))
        logger.info("[lora] reusing %d cached adapters from %s", len(adapters), self.cache.root if self.cache else "")
        return adapters

    def pool_for(self, sources: list[Source], source_key: str) -> list[Share]:
        """Phase `warmstart-generate`, or its cached result (keyed by the sources actually used); checkpointed."""
        key = pool_key(self.settings, cache_key(source_key, sorted(c.partition_id for c, _, _ in sources)))
        cached = self.cache.load_pool(key) if self.cache else None
        if cached is not None:
            by_pid, seconds = cached
            shares = [(client, by_pid[client.partition_id]) for client, _, _ in sources]
            for client, share in shares:
                self.recorder.clients[client.partition_id].details["synthetic_images"] = len(share)
            self.recorder.add_cached_phase("warmstart-generate", seconds)
        else:
            with self.recorder.phase("warmstart-generate"):
                shares = generate_pool(self.run_context, sources)
            seconds = self.recorder.phases[-1]["seconds"]
            if self.cache:
                self.cache.save_pool(key, {c.partition_id: share for c, share in shares}, seconds)
        self.checkpoint.store.save_pool(key, {c.partition_id: share for c, share in shares}, seconds)
        self.checkpoint.mark("warmstart-generate", self.recorder, key=key)
        return shares
