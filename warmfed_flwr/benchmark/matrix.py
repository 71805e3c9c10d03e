"""The comparison matrix: which method runs with which rounds and overrides."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

METRICS = ("global_acc", "personal_acc", "personal_acc_min", "bytes_up", "bytes_down", "seconds")


@dataclass(frozen=True)
class Entry:
    """One cell of the matrix: a label for the table, the app's method key, its rounds and extra keys."""

    label: str
    method: str
    rounds: int
    overrides: dict[str, Any] = field(default_factory=dict)

    def run_config(self, seed: int) -> dict[str, Any]:
        """The run-config keys this entry sets for one seed."""
        return {"method": self.method, "rounds": self.rounds, "seed": seed, **self.overrides}


def default_matrix() -> list[Entry]:
    """Every method of the paper's comparison plus WarmFed's ablations.

    `fedavg` runs as method fedavg-ft: its global accuracy is FedAvg's, its personalized accuracy
    that of the local fine-tuning of the final FedAvg model.
    """
    entries = [Entry("local", "local", 0), Entry("centralized", "centralized", 0)]
    for rounds in (1, 5, 20, 50):
        entries.append(Entry("fedavg", "fedavg-ft", rounds))
        entries.append(Entry("fedprox", "fedprox", rounds))
    for rounds in (0, 5):
        entries.append(Entry("fgl", "fgl", rounds))
        entries.append(Entry("warmfed", "warmfed", rounds))
    entries += [
        Entry("warmfed-dsd-none", "warmfed", 0, {"dsd.mode": "none"}),
        Entry("warmfed-dsd-constant", "warmfed", 0, {"dsd.mode": "constant"}),
        Entry("warmfed-no-label-counts", "warmfed", 0, {"lora.send-label-counts": False}),
    ]
    return entries


def select(entries: list[Entry], labels: list[str] | None) -> list[Entry]:
    """The entries whose label is in `labels` (all when None); an unknown label is an error naming it."""
    if not labels:
        return entries
    known = {e.label for e in entries}
    unknown = sorted(set(labels) - known)
    if unknown:
        raise ValueError(f"unknown method label(s) {unknown}; known: {sorted(known)}")
    return [e for e in entries if e.label in labels]
