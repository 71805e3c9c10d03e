"""The personalization matrix's goal, checked on its means and spreads over seeds.

A DSD variant meets it in a regime when its personalized models are at least as accurate on their
own test splits as the best peer's (plain fine-tuning after the warm start, FedBN, Ditto) and
clearly more resilient: on other clients' test splits, or on a label-balanced one, its mean minus
its spread is above the best peer's mean plus that peer's spread.
"""

from __future__ import annotations

from warmfed_flwr.benchmark.claims import Cell, Cells, mean_spread

PEERS: tuple[Cell, ...] = (("warmfed-ft", 0), ("fedbn", 20), ("ditto", 20))
DSD_VARIANTS = ("warmfed-dsd", "warmfed-dsd-constant", "warmfed-dsd-self", "warmfed-dsd-synthetic")
RESILIENCE = ("personal_acc_others", "personal_acc_balanced")


def _best_peer(cells: Cells, metric: str) -> tuple[str, float, float] | None:
    """(label, mean, spread) of the peer with the highest mean of `metric`; None when no peer has it."""
    found = [(f"{label} r{rounds}", *mean_spread(cells[(label, rounds)][metric]))
             for label, rounds in PEERS if cells.get((label, rounds), {}).get(metric)]
    return max(found, key=lambda peer: peer[1]) if found else None


def goal_rows(cells: Cells) -> list[tuple[str, ...]]:
    """Per DSD variant in the cells: own accuracy and each resilience metric against the best peer, and the verdict."""
    rows = []
    if _best_peer(cells, "personal_acc") is None:  # not the personalization matrix (the comparison's DSD ablations)
        return rows
    for variant in DSD_VARIANTS:
        metrics = cells.get((variant, 0), {})
        if not metrics.get("personal_acc"):
            continue
        row, own_ok, resilient = [variant], None, False
        for metric in ("personal_acc", *RESILIENCE):
            peer = _best_peer(cells, metric)
            if not metrics.get(metric) or peer is None:
                row.append("-")
                continue
            mean, spread = mean_spread(metrics[metric])
            label, peer_mean, peer_spread = peer
            row.append(f"{mean:.3f} ± {spread:.3f} vs {label} {peer_mean:.3f} ± {peer_spread:.3f}")
            if metric == "personal_acc":
                own_ok = mean >= peer_mean
            else:
                resilient |= mean - spread > peer_mean + peer_spread
        row.append("-" if own_ok is None else ("yes" if own_ok and resilient else "**no**"))
        rows.append(tuple(row))
    return rows


def goal_table(cells: Cells) -> str:
    """The goal as a markdown table ('' when the cells hold no DSD variant)."""
    rows = goal_rows(cells)
    if not rows:
        return ""
    lines = ["| DSD variant | own (vs best peer) | others (vs best peer) | balanced (vs best peer) | goal met |",
             "|---|---|---|---|---|"]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows]) + "\n"
