"""WarmFedStrategy: LoRA adapters -> synthetic warm-start pool -> global model -> optional rounds -> DSD.

`warmfed_flwr.server.run_experiment` runs it; pass your own `flwr.serverapp.strategy.Strategy` there
(`round_strategy=`, with what its `start` takes) to run the optional rounds with it (see docs/custom-strategy.md).
With `use_adapters=False` it is the FGL baseline: the server generates from the base model with
class conditioning only, and clients send nothing in the first phase.
Each product of the warm start comes from the run's checkpoint, the cache or its phase
(warmfed_flwr/run/store.py); the later phases are checkpointed too. With `snapshot-rounds`, the
results of shorter runs (round 0: one-shot) are recorded on the way (warmfed_flwr/run/snapshots.py).
"""

from __future__ import annotations

import torch
from flwr.app import ArrayRecord

from warmfed_flwr.data.types import ImageSplit
from warmfed_flwr.phases.lora import collect_adapters
from warmfed_flwr.phases.personalize import personalize
from warmfed_flwr.phases.rounds import StrategyRun, make_aggregation, run_rounds
from warmfed_flwr.phases.share_check import check_shares
from warmfed_flwr.phases.warmstart import Source, generate_pool, pool_fine_tuning, save_samples, train_on_pool
from warmfed_flwr.run.artifacts import base_source_key
from warmfed_flwr.run.context import RunContext
from warmfed_flwr.run.snapshots import SnapshotTaker
from warmfed_flwr.run.store import Share, WarmStartStore
from warmfed_flwr.run.transport import model_to_record, split_to_record
from warmfed_flwr.runtime.heap import release_freed_memory


class WarmFedStrategy:
    """Runs WarmFed's phases on a run's clients and records everything in its recorder."""

    def __init__(self, run: RunContext, round_strategy: StrategyRun | None = None, use_adapters: bool = True) -> None:
        self.run_context = run
        self.round_strategy = round_strategy
        self.use_adapters = use_adapters
        self.store = WarmStartStore(run)
        self.synthetic_shares: dict[int, ArrayRecord] = {}  # by partition id, sent with DSD (dsd.synthetic-share)

    def run(self) -> ArrayRecord:
        """The method's steps; returns the final global model's arrays."""
        run, settings = self.run_context, self.run_context.settings
        pool = self.synthetic_pool()  # 1. the clients' adapters -> the server's synthetic pool
        arrays = self.store.model("warmstart-train", lambda: model_to_record(train_on_pool(run, pool).cpu()))  # 2.
        server_update = pool_fine_tuning(run, pool)
        del pool  # from here only server_update needs it: freed now unless server.round-epochs > 0
        release_freed_memory()  # the generation and warm-start peak, not held through the rounds and DSD

        def distill(global_arrays: ArrayRecord, phase: str) -> None:
            personalize(run, global_arrays, settings.dsd.mode, phase, self.synthetic_shares)

        if settings.rounds > 0:  # optional rounds of any Flower strategy
            snapshots = SnapshotTaker(run.recorder, settings.snapshot_rounds, distill)
            if run.checkpoint.entry("rounds") is None and run.checkpoint.entry("round") is None:
                snapshots(0, arrays)
            plan = self.round_strategy or StrategyRun(make_aggregation(settings, len(run.clients)))
            arrays = run_rounds(run, plan, arrays, server_update, after_round=snapshots)
        run.checkpoint.once("dsd", run.recorder, lambda: distill(arrays, "dsd"))  # 3. personalization by DSD
        return arrays

    def synthetic_pool(self) -> ImageSplit:
        """The warm-start data: every client's share of synthetic images in one split (samples.png drawn on the way),
        less the shares the share check leaves out (`server.share-check = "enforce"`)."""
        shares = self.store.checkpointed_pool()
        if shares is None:
            shares = self.generated_pool()
        save_samples(self.run_context, shares)
        if self.run_context.settings.dsd.synthetic_share:
            self.synthetic_shares = {client.partition_id: split_to_record(share) for client, share in shares}
        if self.use_adapters:  # FGL's shares all come from the base model: nothing to check
            shares = check_shares(self.run_context, shares)
        return ImageSplit(torch.cat([s.images for _, s in shares]), torch.cat([s.labels for _, s in shares]))

    def generated_pool(self) -> list[Share]:
        """Phases `lora` and `warmstart-generate`: each client's share, from its adapter (or the base model for FGL)."""
        run = self.run_context
        if self.use_adapters:
            adapters, source_key = self.store.adapters(lambda keep: collect_adapters(run, keep))
            sources: list[Source] = [(a.client, a.arrays, a.label_counts) for a in adapters]
        else:
            source_key = base_source_key(run.settings, [c.partition_id for c in run.clients])
            sources = [(c, None, None) for c in run.clients]
        return self.store.pool([client for client, _, _ in sources], source_key, lambda: generate_pool(run, sources))
