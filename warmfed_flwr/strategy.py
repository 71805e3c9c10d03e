"""WarmFedStrategy: LoRA adapters -> synthetic warm-start pool -> global model -> optional rounds -> DSD.

Import it into your own `server_app.py` and pass any `flwr.serverapp.strategy.Strategy` as
`round_strategy` to use your aggregation for the optional FedAvg-style rounds (see README).
With `use_adapters=False` it is the FGL baseline: the server generates from the base model with
class conditioning only, and clients send nothing in the first phase.
"""

from __future__ import annotations

from dataclasses import dataclass
from logging import INFO, WARNING
from typing import Mapping

import numpy as np
import torch
from flwr.app import ArrayRecord, RecordDict
from flwr.common.logger import log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from warmfed_flwr import data
from warmfed_flwr.config import Settings
from warmfed_flwr.data.errors import DataError
from warmfed_flwr.data.types import ImageSplit
from warmfed_flwr.federation import ClientInfo, TooFewClientsError, send_phase
from warmfed_flwr.generative import load_backbone
from warmfed_flwr.generative.adapter import AdapterError, adapter_bytes, validate_adapter
from warmfed_flwr.generative.base import Adapter
from warmfed_flwr.models import build_classifier
from warmfed_flwr.personalize import personalize
from warmfed_flwr.plots import save_sample_grid
from warmfed_flwr.results import RunRecorder
from warmfed_flwr.rounds import make_aggregation, run_rounds
from warmfed_flwr.training import pick_device, train_supervised
from warmfed_flwr.transport import load_record_into, model_to_record, record_to_arrays


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


class WarmFedStrategy:
    """Runs WarmFed's phases on a Grid and records everything in a RunRecorder."""

    def __init__(
        self,
        settings: Settings,
        run_config: Mapping[str, object],
        recorder: RunRecorder,
        class_names: tuple[str, ...],
        round_strategy: Strategy | None = None,
        use_adapters: bool = True,
    ) -> None:
        self.settings = settings
        self.run_config = dict(run_config)
        self.recorder = recorder
        self.class_names = class_names
        self.round_strategy = round_strategy
        self.use_adapters = use_adapters
        self.device = pick_device()

    def run(self, grid: Grid, clients: list[ClientInfo]) -> ArrayRecord:
        """All phases; returns the final global model's arrays."""
        rec = self.recorder
        if self.use_adapters:
            with rec.phase("lora"):
                adapters = self.collect_adapters(grid, clients)
            sources: list[tuple[ClientInfo, Adapter | None, list[int] | None]] = [
                (a.client, a.arrays, a.label_counts) for a in adapters
            ]
        else:
            sources = [(c, None, None) for c in clients]
        with rec.phase("warmstart-generate"):
            shares = self.generate_pool(sources)
            self.save_samples(shares)
        pool = ImageSplit(torch.cat([s.images for _, s in shares]), torch.cat([s.labels for _, s in shares]))
        with rec.phase("warmstart-train"):
            model = self.train_on_pool(pool)
        arrays = model_to_record(model.cpu())
        if self.settings.rounds > 0:
            strategy = self.round_strategy or make_aggregation(self.settings, len(clients))
            with rec.phase("rounds"):
                arrays = run_rounds(
                    grid, rec, strategy, arrays, self.settings, self.run_config, self.server_update(pool)
                )
        with rec.phase("dsd"):
            personalize(grid, rec, clients, arrays, self.settings, self.run_config, self.settings.dsd.mode)
        return arrays

    def collect_adapters(self, grid: Grid, clients: list[ClientInfo]) -> list[ClientAdapter]:
        """Phase `lora`: ask every client for its adapter; keep the ones that pass validation."""
        s = self.settings
        replies = send_phase(
            grid, self.recorder, "lora", "train.lora", {c.node_id: RecordDict() for c in clients},
            self.run_config, s.timeout, s.min_clients,
        )
        expected = load_backbone(s.lora).adapter_shapes(s.lora)
        by_node = {c.node_id: c for c in clients}
        good: list[ClientAdapter] = []
        for node_id, content in sorted(replies.items()):
            client = by_node[node_id]
            name = f"partition {client.partition_id} ({client.domain})"
            try:
                arrays = validate_adapter(
                    record_to_arrays(content["adapter"]), dict(content["adapter-config"]), expected, s.lora, name
                )
            except (AdapterError, KeyError) as err:
                self.recorder.add_failure("lora", node_id, f"adapter rejected: {err}")
                log(WARNING, "[lora] adapter of %s rejected: %s", name, err)
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

    def generate_pool(
        self, sources: list[tuple[ClientInfo, Adapter | None, list[int] | None]]
    ) -> list[tuple[ClientInfo, ImageSplit]]:
        """Phase `warmstart`: each source's share of the synthetic pool (from its adapter, or the base for FGL)."""
        s = self.settings
        backbone = load_backbone(s.lora)
        shares = []
        for i, (client, adapter, counts) in enumerate(sources):
            wanted = labels_for_client(counts, len(self.class_names), s.generate.images_per_client)
            seed = s.seed * 1_000_003 + client.partition_id * 101 + 7
            log(INFO, "[warmstart] generating %d images for partition %d (%s), %d of %d clients",
                len(wanted), client.partition_id, client.domain, i + 1, len(sources))
            generated = backbone.generate(wanted, self.class_names, adapter, s.generate, s.data.image_size, seed)
            shares.append((client, ImageSplit(generated, wanted)))
            self.recorder.clients[client.partition_id].details["synthetic_images"] = len(wanted)
        backbone.release()
        return shares

    def save_samples(self, shares: list[tuple[ClientInfo, ImageSplit]]) -> None:
        """samples.png: each client's synthetic images next to real ones of its domain.

        Real rows appear only where the server process can read the data itself (simulations of
        the embedded or an on-disk data set); a deployed server never sees client images.
        """
        rows = []
        for client, share in shares:
            rows.append((f"synthetic {client.partition_id}\n{client.domain}", share))
            try:
                rows.append((f"real {client.partition_id}\n{client.domain}",
                             data.load_client_data(self.settings.data, client.partition_id).train))
            except (DataError, OSError) as err:
                log(INFO, "[warmstart] samples.png without real images of partition %d: %s", client.partition_id, err)
        save_sample_grid(self.recorder.out_dir / "samples.png", rows, self.class_names)

    def train_on_pool(self, pool: ImageSplit) -> torch.nn.Module:
        """The warm start: a fresh global classifier trained on the synthetic pool (server-side fine-tuning)."""
        s = self.settings
        model = build_classifier(s.train.model, len(self.class_names), s.data.image_size, seed=s.seed)
        train_supervised(model, pool, s.server_epochs, s.train.lr, s.train.batch_size, s.seed, self.device)
        return model

    def server_update(self, pool: ImageSplit):  # type: ignore[no-untyped-def]
        """After each aggregation, fine-tune on the pool for `server.round-epochs` epochs (None when 0)."""
        s = self.settings
        if s.server_round_epochs == 0:
            return None

        def update(arrays: ArrayRecord) -> ArrayRecord:
            model = build_classifier(s.train.model, len(self.class_names), s.data.image_size)
            load_record_into(model, arrays)
            train_supervised(model, pool, s.server_round_epochs, s.train.lr, s.train.batch_size, s.seed, self.device)
            return model_to_record(model.cpu())

        return update
