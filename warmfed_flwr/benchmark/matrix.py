"""The comparison matrix: which method runs with which rounds and overrides, and which cells each run fills."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from warmfed_flwr.benchmark.poisoning import ATTACKS
from warmfed_flwr.generative.upload import UPLOAD_DTYPES

@dataclass(frozen=True)
class Entry:
    """One run per seed: a label for the table, the app's method key, its rounds and extra keys.

    `snapshots` are earlier rounds whose cells the same run also fills, from the results it records on
    the way (run-config `snapshot-rounds`, warmfed_flwr/run/snapshots.py) instead of a run of their own.
    `attack` makes the harness run a copy of the app in which its attacking clients poison their data.
    """

    label: str
    method: str
    rounds: int
    overrides: dict[str, Any] = field(default_factory=dict)
    snapshots: tuple[int, ...] = ()
    attack: str = ""  # a poisoning attack of the harness's --attackers (benchmark/poisoning.py); "" = honest clients

    @property
    def cell_rounds(self) -> tuple[int, ...]:
        """The rounds of every cell this entry fills: its snapshots and its own."""
        return (*self.snapshots, self.rounds)

    def run_config(self, seed: int) -> dict[str, Any]:
        """The run-config keys this entry sets for one seed."""
        config = {"method": self.method, "rounds": self.rounds, "seed": seed, **self.overrides}
        if self.snapshots:
            config["snapshot-rounds"] = ",".join(str(r) for r in self.snapshots)
        return config


def default_matrix() -> list[Entry]:
    """Every method of the paper's comparison plus WarmFed's ablations.

    `fedavg` runs as method fedavg-ft: its global accuracy is FedAvg's, its personalized accuracy
    that of the local fine-tuning of the final FedAvg model. The 1-, 5- and 20-round cells of FedAvg
    and FedProx come from their 50-round runs, the one-shot cells of FGL and WarmFed from their
    5-round runs (snapshots: the same numbers as runs of their own, without their fixed costs).
    """
    return [
        Entry("local", "local", 0),
        Entry("centralized", "centralized", 0),
        Entry("fedavg", "fedavg-ft", 50, snapshots=(1, 5, 20)),
        Entry("fedprox", "fedprox", 50, snapshots=(1, 5, 20)),
        Entry("fgl", "fgl", 5, snapshots=(0,)),
        Entry("warmfed", "warmfed", 5, snapshots=(0,)),
        Entry("warmfed-dsd-none", "warmfed", 0, {"dsd.mode": "none"}),
        Entry("warmfed-dsd-constant", "warmfed", 0, {"dsd.mode": "constant"}),
        Entry("warmfed-no-label-counts", "warmfed", 0, {"lora.send-label-counts": False}),
    ]


RESILIENCE_EVALUATORS = 3  # the personalization matrix evaluates each personalized model on 3 other clients


def personalization_matrix() -> list[Entry]:
    """The personalized methods side by side: own, others' and label-balanced accuracy (BENCHMARKS.md,
    personalization).

    The federated peers run 20 rounds, their 5-round cells as snapshots; FedBN on the small CNN with
    BatchNorm (`cnn-bn`), which it needs; WarmFed one-shot with plain fine-tuning and each DSD variant, and plain
    fine-tuning and DSD with a validation share (`dsd.validation-fraction` 0.2: the epochs chosen on a fifth of
    each class, the global model kept when none beats it).
    """
    rounds, snapshots, others = 20, (5,), {"evaluate-others": RESILIENCE_EVALUATORS}
    return [
        Entry("local", "local", 0, others),
        Entry("fedavg-ft", "fedavg-ft", rounds, others, snapshots=snapshots),
        Entry("fedbn", "fedbn", rounds, {"model.name": "cnn-bn"} | others, snapshots=snapshots),
        Entry("ditto", "ditto", rounds, others, snapshots=snapshots),
        Entry("warmfed-ft", "warmfed", 0, {"dsd.mode": "none"} | others),
        Entry("warmfed-dsd", "warmfed", 0, others),
        Entry("warmfed-dsd-constant", "warmfed", 0, {"dsd.mode": "constant"} | others),
        Entry("warmfed-dsd-self", "warmfed", 0, {"dsd.teacher": "global-or-self"} | others),
        Entry("warmfed-dsd-synthetic", "warmfed", 0, {"dsd.synthetic-share": True} | others),
        Entry("warmfed-ft-val", "warmfed", 0, {"dsd.mode": "none", "dsd.validation-fraction": 0.2} | others),
        Entry("warmfed-dsd-val", "warmfed", 0, {"dsd.validation-fraction": 0.2} | others),
    ]


def upload_matrix() -> list[Entry]:
    """WarmFed one-shot with each `lora.upload-dtype`: what smaller uploads cost in accuracy (BENCHMARKS.md)."""
    return [Entry(f"warmfed-{dtype}", "warmfed", 0, {"lora.upload-dtype": dtype}) for dtype in UPLOAD_DTYPES]


def robustness_matrix() -> list[Entry]:
    """Each attack (and none) against WarmFed one-shot without and with the share check, and FedAvg's 5 and 50 rounds
    with plain, median and trimmed-mean aggregation (BENCHMARKS.md, clients that lie)."""
    entries = []
    for attack in ("", *ATTACKS):
        suffix = f"@{attack}" if attack else ""
        entries += [
            Entry(f"warmfed{suffix}", "warmfed", 0, {"server.share-check": "off"}, attack=attack),
            Entry(f"warmfed-check{suffix}", "warmfed", 0, {"server.share-check": "enforce"}, attack=attack),
        ]
        entries += [
            Entry(f"{aggregation}{suffix}", "fedavg", 50, {"train.aggregation": aggregation}, snapshots=(5,), attack=attack)
            for aggregation in ("fedavg", "fedmedian", "fedtrimmedavg")
        ]
    return entries


MATRICES = {
    "comparison": default_matrix,
    "personalization": personalization_matrix,
    "upload": upload_matrix,
    "robustness": robustness_matrix,
}


def select(entries: list[Entry], labels: list[str] | None) -> list[Entry]:
    """The entries whose label is in `labels` (all when None); an unknown label is an error naming it."""
    if not labels:
        return entries
    known = {e.label for e in entries}
    unknown = sorted(set(labels) - known)
    if unknown:
        raise ValueError(f"unknown method label(s) {unknown}; known: {sorted(known)}")
    return [e for e in entries if e.label in labels]
