"""The paper's claims, checked on the matrix's means over seeds: one table row per claim, holds or not."""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Mapping, Sequence

Cell = tuple[str, int]  # (method label, rounds)
Cells = Mapping[Cell, Mapping[str, Sequence[float]]]

BASELINE_ROUNDS = 5  # "in one or five rounds": personalization is compared with FedAvg fine-tuned after 5 rounds


@dataclass(frozen=True)
class Claim:
    """`left` >= `right` + `margin` (or `left` < `right` when `strict_less`), on means over seeds."""

    text: str
    left: tuple[Cell, str]
    right: tuple[Cell, str]
    margin: float = 0.0
    strict_less: bool = False


CLAIMS = (
    Claim("WarmFed one-shot global >= FedAvg 5 rounds", (("warmfed", 0), "global_acc"), (("fedavg", 5), "global_acc")),
    Claim("WarmFed 5 rounds global >= FedAvg 50 rounds", (("warmfed", 5), "global_acc"), (("fedavg", 50), "global_acc")),
    Claim("WarmFed one-shot global >= FGL one-shot + 0.05", (("warmfed", 0), "global_acc"), (("fgl", 0), "global_acc"),
          margin=0.05),
    Claim("DSD confidence >= DSD none (personalized)", (("warmfed", 0), "personal_acc"),
          (("warmfed-dsd-none", 0), "personal_acc")),
    Claim("WarmFed one-shot upload < FedAvg 5 rounds upload", (("warmfed", 0), "bytes_up"), (("fedavg", 5), "bytes_up"),
          strict_less=True),
)


def mean_spread(values: Sequence[float]) -> tuple[float, float]:
    """Mean and standard deviation over seeds (spread 0 for a single seed)."""
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def _mean(cells: Cells, cell: Cell, metric: str) -> float | None:
    values = cells.get(cell, {}).get(metric, [])
    return statistics.fmean(values) if values else None


def _verdict(holds: bool | None) -> str:
    return "not run" if holds is None else ("yes" if holds else "**no**")


def claim_rows(cells: Cells) -> list[tuple[str, str, str, str]]:
    """(claim, left value, right value, holds) for every claim, values as means over seeds."""
    rows = []
    for claim in CLAIMS:
        left, right = _mean(cells, *claim.left), _mean(cells, *claim.right)
        holds = None
        if left is not None and right is not None:
            holds = left < right if claim.strict_less else left >= right + claim.margin
        rows.append((claim.text, _fmt(left), _fmt(right), _verdict(holds)))
    rows.append(personalization_row(cells))
    return rows


def personalization_row(cells: Cells) -> tuple[str, str, str, str]:
    """WarmFed one-shot personalized >= max(local, FedAvg fine-tuned after 5 rounds) on every client."""
    text = f"WarmFed personalized >= max(local, fedavg-ft {BASELINE_ROUNDS} rounds) on every client"
    warmfed = cells.get(("warmfed", 0), {})
    clients = sorted(m for m in warmfed if m.startswith("personal_acc:"))
    others = [cells.get(("local", 0), {}), cells.get(("fedavg", BASELINE_ROUNDS), {})]
    if not clients or any(not any(m.startswith("personal_acc:") for m in other) for other in others):
        return text, "-", "-", _verdict(None)
    worst_margin, worst_client = float("inf"), ""
    for metric in clients:
        baselines = [statistics.fmean(o[metric]) for o in others if o.get(metric)]
        if not baselines:
            continue
        best_baseline = max(baselines)
        margin = statistics.fmean(warmfed[metric]) - best_baseline
        if margin < worst_margin:
            worst_margin, worst_client = margin, metric.split(":", 1)[1].removeprefix("client")
    if not worst_client:
        return text, "-", "-", _verdict(None)
    return text, f"worst margin {worst_margin:+.3f} (client {worst_client})", "max(local, fedavg-ft) per client", _verdict(
        worst_margin >= 0
    )


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value / 1e6:.2f} MB" if value > 1000 else f"{value:.3f}"


def claims_table(cells: Cells) -> str:
    """The claims as a markdown table."""
    lines = ["| claim (means over seeds) | WarmFed | compared with | holds |", "|---|---|---|---|"]
    lines += ["| " + " | ".join(row) + " |" for row in claim_rows(cells)]
    return "\n".join(lines) + "\n"
