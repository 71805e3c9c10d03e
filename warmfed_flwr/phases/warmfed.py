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

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import numpy as np
import torch
from flwr.app import ArrayRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from warmfed_flwr import data, seeds
from warmfed_flwr.run.artifacts import ArtifactCache, adapter_key, base_source_key, cache_key, pool_key
from warmfed_flwr.run.checkpoint import Checkpoint, ResumeError
from warmfed_flwr.config import Settings
from warmfed_flwr.data.types import ImageSplit, pixels_as
from warmfed_flwr.run.federation import ClientInfo, TooFewClientsError, send_phase
from warmfed_flwr.generative import load_backbone
from warmfed_flwr.generative.adapter import AdapterError, adapter_bytes, validate_adapter
from warmfed_flwr.generative.base import Adapter
from warmfed_flwr.runtime.heap import release_freed_memory
from warmfed_flwr.logs import Progress, logger
from warmfed_flwr.learning.models import build_classifier, initial_classifier
from warmfed_flwr.phases.personalize import personalize
from warmfed_flwr.run.plots import save_sample_grid, spread
from warmfed_flwr.run.results import RunRecorder
from warmfed_flwr.seeds import client_seed
from warmfed_flwr.phases.rounds import StrategyRun, make_aggregation, run_rounds
from warmfed_flwr.run.snapshots import SnapshotTaker
from warmfed_flwr.learning.training import pick_device, train_supervised
from warmfed_flwr.run.transport import load_record_into, model_to_record, record_to_arrays


# A client and what its share of the pool is generated from: its adapter (None: the base model) and label counts.
Source = tuple[ClientInfo, Adapter | None, list[int] | None]


@dataclass(frozen=True)
class ClientAdapter:
    """A validated adapter and the label counts its client reported (None when withheld)."""

    client: ClientInfo
    arrays: Adapter
    label_counts: list[int] | None


def labels_for_client(label_counts: list[int] | None, num_classes: int, total: int) -> torch.Tensor:
    """`total` labels following the client's class proportions (largest remainder), or uniform when withheld."""
    if label_counts is None or sum(label_counts) == 0:
        weights = np.full(num_classes, 1.0 / num_classes)
    else:
        counts = np.asarray(label_counts, dtype=np.float64)
        weights = counts / counts.sum()
    exact = weights * total
    per_class = np.floor(exact).astype(int)
    for idx in np.argsort(-(exact - per_class))[: total - per_class.sum()]:
        per_class[idx] += 1
    return torch.repeat_interleave(torch.arange(num_classes), torch.as_tensor(per_class))


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
    """Runs WarmFed's phases on a Grid and records everything in a RunRecorder."""

    def __init__(
        self,
        settings: Settings,
        recorder: RunRecorder,
        class_names: tuple[str, ...],
        round_strategy: StrategyRun | None = None,
        use_adapters: bool = True,
        checkpoint: Checkpoint | None = None,
    ) -> None:
        self.settings = settings
        self.recorder = recorder
        self.class_names = class_names
        self.round_strategy = round_strategy
        self.use_adapters = use_adapters
        self.checkpoint = checkpoint or Checkpoint(recorder.out_dir)
        self.device = pick_device()
        self.cache = ArtifactCache(Path(settings.cache_dir).expanduser().resolve()) if settings.cache_dir else None

    def run(self, grid: Grid, clients: list[ClientInfo]) -> ArrayRecord:
        """All phases; returns the final global model's arrays."""
        rec, ckpt = self.recorder, self.checkpoint
        pool = self.synthetic_pool(grid, clients)
        arrays = self.warm_start_model(pool)
        server_update = self.server_update(pool)
        del pool  # from here only server_update needs it: freed now unless server.round-epochs > 0
        release_freed_memory()  # the generation and warm-start peak, not held through the rounds and DSD

        def distill(global_arrays: ArrayRecord, phase: str) -> None:
            personalize(grid, rec, clients, global_arrays, self.settings, self.settings.dsd.mode, phase)

        if self.settings.rounds > 0:
            snapshots = SnapshotTaker(rec, self.settings.snapshot_rounds, distill)
            if ckpt.entry("rounds") is None and ckpt.entry("round") is None:
                snapshots(0, arrays)
            plan = self.round_strategy or StrategyRun(make_aggregation(self.settings, len(clients)))
            arrays = run_rounds(
                grid, rec, plan, arrays, self.settings, server_update, ckpt,
                after_round=snapshots,
            )
        ckpt.once("dsd", rec, lambda: distill(arrays, "dsd"))
        return arrays

    def synthetic_pool(self, grid: Grid, clients: list[ClientInfo]) -> ImageSplit:
        """The warm-start data: every client's share of synthetic images in one split (samples.png drawn on the way)."""
        shares = self.warm_start_pool(grid, clients)
        self.save_samples(shares)
        return ImageSplit(torch.cat([s.images for _, s in shares]), torch.cat([s.labels for _, s in shares]))

    def warm_start_pool(self, grid: Grid, clients: list[ClientInfo]) -> list[tuple[ClientInfo, ImageSplit]]:
        """Phases `lora` and `warmstart-generate` (each from the checkpoint, the cache, or run); the pool's shares."""
        done = self.checkpoint.entry("warmstart-generate")
        if done is not None:
            stored = self.checkpoint.store.load_pool(done["key"])
            if stored is None:
                raise ResumeError(f"config key 'resume': the synthetic pool is missing from {self.checkpoint.store.root}")
            by_pid = clients_by_partition(clients, stored[0])
            return [(by_pid[pid], share) for pid, share in sorted(stored[0].items())]
        if self.use_adapters:
            adapters, source_key = self.adapters_for(grid, clients)
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
            model = self.train_on_pool(pool)
        arrays = model_to_record(model.cpu())
        ckpt.mark("warmstart-train", rec, model=ckpt.save_model("warmstart", arrays))
        return arrays

    def adapters_for(self, grid: Grid, clients: list[ClientInfo]) -> tuple[list[ClientAdapter], str]:
        """Phase `lora`, from the checkpoint, the cache, or run; returns the adapters and their key."""
        s, ckpt = self.settings, self.checkpoint
        done = ckpt.entry("lora")
        if done is not None:
            return self.restore_adapters(clients, done["key"], done["partitions"]), done["key"]
        pids = [c.partition_id for c in clients]
        key = adapter_key(s, pids)
        cached = self.cache.load_adapters(key, pids) if self.cache else None
        adapters = self.reuse_adapters(clients, cached) if cached is not None else self.run_lora(grid, clients, key)
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

    def run_lora(self, grid: Grid, clients: list[ClientInfo], key: str) -> list[ClientAdapter]:
        """Phase `lora`: collect the adapters; a complete set also goes to the cache."""
        rec = self.recorder
        pids = [c.partition_id for c in clients]
        before = {pid: (rec.clients[pid].bytes_up, rec.clients[pid].bytes_down) for pid in pids}
        with rec.phase("lora"):
            adapters = self.collect_adapters(grid, clients)
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

    def pool_for(self, sources: list[Source], source_key: str) -> list[tuple[ClientInfo, ImageSplit]]:
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
                shares = self.generate_pool(sources)
            seconds = self.recorder.phases[-1]["seconds"]
            if self.cache:
                self.cache.save_pool(key, {c.partition_id: share for c, share in shares}, seconds)
        self.checkpoint.store.save_pool(key, {c.partition_id: share for c, share in shares}, seconds)
        self.checkpoint.mark("warmstart-generate", self.recorder, key=key)
        return shares

    def collect_adapters(self, grid: Grid, clients: list[ClientInfo]) -> list[ClientAdapter]:
        """Phase `lora`: ask every client for its adapter; keep the ones that pass validation."""
        s = self.settings
        replies = send_phase(
            grid, self.recorder, "lora", "train.lora", {c.node_id: RecordDict() for c in clients},
            s.timeout, s.min_clients,
        )
        expected = load_backbone(s.lora).adapter_shapes(s.lora)
        by_node = {c.node_id: c for c in clients}
        good: list[ClientAdapter] = []
        # partition order, not node-id order: node ids change between runs, the pool's order must not
        for node_id, content in sorted(replies.items(), key=lambda item: by_node[item[0]].partition_id):
            client = by_node[node_id]
            name = f"partition {client.partition_id} ({client.domain})"
            try:
                arrays = validate_adapter(
                    record_to_arrays(content["adapter"]), dict(content["adapter-config"]), expected, s.lora, name
                )
            except (AdapterError, KeyError) as err:
                self.recorder.add_failure("lora", node_id, f"adapter rejected: {err}")
                logger.warning("[lora] adapter of %s rejected: %s", name, err)
                continue
            metrics = content["metrics"]
            counts = [int(v) for v in metrics["label-counts"]] if "label-counts" in metrics else None
            details = self.recorder.clients[client.partition_id].details
            details["adapter_bytes"] = adapter_bytes(arrays)
            details["fit_seconds"] = round(float(metrics["fit-seconds"]), 3)
            good.append(ClientAdapter(client, arrays, counts))
        if len(good) < s.min_clients:
            raise TooFewClientsError(
                f"phase 'lora': only {len(good)} valid adapters, fewer than min-clients={s.min_clients}; "
                "see failures in results.json"
            )
        return good

    def generate_pool(self, sources: list[Source]) -> list[tuple[ClientInfo, ImageSplit]]:
        """Phase `warmstart`: each source's share of the synthetic pool (from its adapter, or the base for FGL)."""
        s = self.settings
        backbone = load_backbone(s.lora)
        pixel_dtype = data.pixel_dtype(s.data)  # kept like the clients' real images: uint8 for image files
        shares, phase = [], Progress("[warmstart] all clients", len(sources), unit="client")
        for i, (client, adapter, counts) in enumerate(sources):
            wanted = labels_for_client(counts, len(self.class_names), s.generate.images_per_client)
            seed = client_seed(s.seed, client.partition_id, seeds.GENERATION)
            logger.info("[warmstart] generating %d images for partition %d (%s), %d of %d clients",
                len(wanted), client.partition_id, client.domain, i + 1, len(sources))
            generated = backbone.generate(wanted, self.class_names, adapter, s.generate, s.data.image_size, seed,
                                          progress_label=f"partition {client.partition_id}")
            shares.append((client, ImageSplit(pixels_as(generated, pixel_dtype), wanted)))
            self.recorder.clients[client.partition_id].details["synthetic_images"] = len(wanted)
            phase.update(i + 1)
        backbone.release()
        release_freed_memory()  # the generation's buffers: the warm-start training comes next
        return shares

    def save_samples(self, shares: list[tuple[ClientInfo, ImageSplit]]) -> None:
        """samples.png: one row of synthetic images per client (at most 24, spread over all), one column per class.

        The server reads no client image, so real images are not shown here;
        `scripts/plot_samples.py` draws a finished run's samples next to the real ones.
        """
        rows = [
            (f"synthetic {client.partition_id}\n{client.domain}", share)
            for client, share in spread(sorted(shares, key=lambda pair: pair[0].partition_id))
        ]
        save_sample_grid(self.recorder.out_dir / "samples.png", rows, self.class_names)

    def train_on_pool(self, pool: ImageSplit) -> torch.nn.Module:
        """The warm start: a fresh global classifier trained on the synthetic pool (server-side fine-tuning)."""
        s = self.settings
        model = initial_classifier(s, len(self.class_names))
        train_supervised(model, pool, s.server_epochs, s.train.lr, s.train.batch_size, s.seed, self.device,
                         max_shift=s.train.augment_shift,
                         progress=Progress("[warmstart-train] global model", s.server_epochs, unit="epoch"))
        return model

    def server_update(self, pool: ImageSplit):  # type: ignore[no-untyped-def]
        """After each aggregation, fine-tune on the pool for `server.round-epochs` epochs (None when 0)."""
        s = self.settings
        if s.server_round_epochs == 0:
            return None

        def update(arrays: ArrayRecord) -> ArrayRecord:
            model = build_classifier(s.train.model, len(self.class_names), s.data.image_size)
            load_record_into(model, arrays)
            train_supervised(model, pool, s.server_round_epochs, s.train.lr, s.train.batch_size, s.seed, self.device,
                             max_shift=s.train.augment_shift)
            return model_to_record(model.cpu())

        return update
