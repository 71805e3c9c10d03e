"""The benchmark CSV: one row per (dataset, method, rounds, seed, metric); rows present are not recomputed."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, Collection, Iterable

COLUMNS = ("dataset", "method", "rounds", "seed", "metric", "value")
RowKey = tuple[str, str, int, int, str]


def read_rows(path: Path) -> list[dict[str, Any]]:
    """All rows of the CSV (empty when the file does not exist yet)."""
    if not path.exists():
        return []
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        if tuple(reader.fieldnames or ()) != COLUMNS:
            raise ValueError(f"{path}: expected columns {', '.join(COLUMNS)}, found {reader.fieldnames}")
        return [
            {**row, "rounds": int(row["rounds"]), "seed": int(row["seed"]), "value": float(row["value"])}
            for row in reader
        ]


def row_key(row: dict[str, Any]) -> RowKey:
    """The identity of a row."""
    return (row["dataset"], row["method"], int(row["rounds"]), int(row["seed"]), row["metric"])


def is_done(existing: Iterable[dict[str, Any]], dataset: str, method: str, rounds: int, seed: int) -> bool:
    """True when this cell already has its seconds row, the one written last for every run."""
    return (dataset, method, rounds, seed, "seconds") in {row_key(r) for r in existing}


def append_rows(path: Path, rows: list[dict[str, Any]]) -> None:
    """Append rows (writing the header for a new file), flushed so an interrupted matrix keeps them."""
    new = not path.exists()
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        if new:
            writer.writeheader()
        writer.writerows(rows)
        f.flush()


def rows_from_results(
    dataset: str, label: str, results: dict[str, Any], seconds: float, attackers: Collection[int] = ()
) -> list[dict[str, Any]]:
    """The CSV rows of one run's results.json; metrics a method lacks are left out; `seconds` comes last.

    With `attackers` (the robustness matrix), also the honest clients' mean global and personalized accuracy and how
    many honest and attacking clients the share check flagged.
    """
    averages = results["averages"]
    metrics: dict[str, float | None] = {
        "global_acc": averages["global_acc"],
        "personal_acc": averages["personal_acc"],
        "personal_acc_min": averages["personal_acc_min"],
        "personal_acc_others": averages.get("personal_acc_others"),  # runs from before resilience: none
        "personal_acc_balanced": averages.get("personal_acc_balanced"),
        "personal_worse_than_global": averages.get("personal_worse_than_global"),
        "bytes_up": averages["bytes_up"],
        "bytes_down": averages["bytes_down"],
    }
    for domain, values in results.get("domains", {}).items():
        metrics[f"global_acc:{domain}"] = values["global_acc"]
    for client in results["clients"]:
        metrics[f"personal_acc:client{client['partition_id']}"] = client["personal_acc"]
    if attackers:
        metrics |= honest_metrics(results["clients"], attackers)
    metrics["seconds"] = seconds
    base = {"dataset": dataset, "method": label, "rounds": results["rounds"], "seed": results["seed"]}
    return [{**base, "metric": name, "value": value} for name, value in metrics.items() if value is not None]


def honest_metrics(clients: list[dict[str, Any]], attackers: Collection[int]) -> dict[str, float | None]:
    """The honest clients' mean accuracies and the share check's flags among honest clients and attackers."""
    honest = [c for c in clients if c["partition_id"] not in attackers]

    def mean(key: str) -> float | None:
        values = [c[key] for c in honest if c.get(key) is not None]
        return sum(values) / len(values) if values else None

    def flagged(group: list[dict[str, Any]]) -> int | None:
        checks = [c["details"]["share_check"] for c in group if "share_check" in c.get("details", {})]
        return sum(check["flagged"] for check in checks) if checks else None

    return {
        "global_acc_honest": mean("global_acc"),
        "personal_acc_honest": mean("personal_acc"),
        "share_flagged_honest": flagged(honest),
        "share_flagged_attackers": flagged([c for c in clients if c["partition_id"] in attackers]),
    }


def cells_of_run(results: dict[str, Any], wall_seconds: float) -> list[tuple[dict[str, Any], float]]:
    """(results, seconds) of every cell one run fills: one per snapshot it recorded, then its own.

    A phase reused from the cache counts with the seconds it took when it was computed. The run's own
    cell leaves out the time spent taking snapshots; a snapshot's cell is the run's cost outside the
    ServerApp (start-up: wall time minus the ServerApp's elapsed time) plus the ServerApp's elapsed
    time up to and including the snapshot, without earlier snapshots.
    """
    outside = wall_seconds - results["seconds_elapsed"]
    cells = [
        ({**results, **snapshot, "rounds": snapshot["round"]}, outside + snapshot["seconds"] + snapshot["cached_seconds"])
        for snapshot in results["snapshots"]
    ]
    cells.append((results, wall_seconds - results["snapshot_seconds"] + results["cached_seconds"]))
    return cells
