"""The benchmark report: a mean +- std table per (method, rounds) and its plots, next to the CSV."""

from __future__ import annotations

import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from warmfed_flwr.benchmark.claims import Cell, claims_table, mean_spread
from warmfed_flwr.benchmark.goals import goal_table
from warmfed_flwr.benchmark.rows import read_rows


def collect(rows: list[dict[str, Any]], dataset: str) -> dict[Cell, dict[str, list[float]]]:
    """Values per (method, rounds) and metric, one per seed."""
    cells: dict[Cell, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        if row["dataset"] == dataset:
            cells[(row["method"], row["rounds"])][row["metric"]].append(row["value"])
    return cells


def mean_std(values: list[float]) -> str:
    """'m +- s' over seeds ('m' for one seed, '-' for none)."""
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.fmean(values):.3f} ± {statistics.stdev(values):.3f}"


def table(cells: dict[Cell, dict[str, list[float]]]) -> str:
    """The markdown table: accuracies, bytes and time per (method, rounds)."""
    domains = sorted({m.split(":", 1)[1] for c in cells.values() for m in c if m.startswith("global_acc:")})
    header = ["method", "rounds", "seeds", "global acc", *[f"global {d}" for d in domains],
              "personal acc", "personal worst client", "personal on others", "personal balanced",
              "personal worse than global", "MB up", "MB down", "seconds"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for (method, rounds), metrics in sorted(cells.items()):
        seeds = len(metrics.get("seconds", []))
        row = [method, str(rounds), str(seeds), mean_std(metrics.get("global_acc", []))]
        row += [mean_std(metrics.get(f"global_acc:{d}", [])) for d in domains]
        row += [
            mean_std(metrics.get("personal_acc", [])),
            mean_std(metrics.get("personal_acc_min", [])),
            mean_std(metrics.get("personal_acc_others", [])),
            mean_std(metrics.get("personal_acc_balanced", [])),
            mean_std(metrics.get("personal_worse_than_global", [])),
            f"{statistics.fmean(metrics['bytes_up']) / 1e6:.2f}" if metrics.get("bytes_up") else "-",
            f"{statistics.fmean(metrics['bytes_down']) / 1e6:.2f}" if metrics.get("bytes_down") else "-",
            f"{statistics.fmean(metrics['seconds']):.0f}" if metrics.get("seconds") else "-",
        ]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def plot_accuracy(cells: dict[Cell, dict[str, list[float]]], path: Path, x_metric: str, x_label: str) -> None:
    """Mean global accuracy of every method against `x_metric` (total MB communicated, or rounds)."""
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    by_method: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for (method, rounds), metrics in cells.items():
        if not metrics.get("global_acc"):
            continue
        if x_metric == "rounds":
            x = float(rounds)
        else:
            x = (statistics.fmean(metrics.get("bytes_up", [0])) + statistics.fmean(metrics.get("bytes_down", [0]))) / 1e6
        by_method[method].append((x, statistics.fmean(metrics["global_acc"])))
    for method, points in sorted(by_method.items()):
        points.sort()
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=method)
    ax.set_xlabel(x_label)
    ax.set_ylabel("global accuracy (mean over seeds)")
    if x_metric != "rounds":
        ax.set_xscale("log")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


MARKERS = "osD^v<>pX*h"  # with the colour cycle (10 colours), cells eleven apart still look different
RESILIENCE_METRICS = (("personal_acc_others", "on other clients' test splits"),
                      ("personal_acc_balanced", "on a label-balanced test split of its domain"))


def plot_resilience(cells: dict[Cell, dict[str, list[float]]], path: Path) -> bool:
    """Personalized accuracy on the client's own test split against each resilience metric the cells have.

    One point per (method, rounds), mean over seeds with the seeds' standard deviation as error bars.
    Returns False (and draws nothing) when no cell has a resilience metric.
    """
    panels = [(metric, label) for metric, label in RESILIENCE_METRICS if any(c.get(metric) for c in cells.values())]
    if not panels:
        return False
    fig = Figure(figsize=(5.5 * len(panels), 4.5))
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (metric, label) in zip(axes, panels):
        for index, ((method, rounds), metrics) in enumerate(sorted(cells.items())):
            own, other = metrics.get("personal_acc"), metrics.get(metric)
            if not own or not other:
                continue
            (x, x_spread), (y, y_spread) = mean_spread(own), mean_spread(other)
            ax.errorbar(x, y, xerr=x_spread, yerr=y_spread, marker=MARKERS[index % len(MARKERS)], capsize=3,
                        label=f"{method} r{rounds}")
        ax.set_xlabel("personalized accuracy on its own test split")
        ax.set_ylabel(f"personalized accuracy {label}")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return True


def write_report(csv_path: Path, dataset: str) -> Path:
    """report.md and the plots beside the CSV (own vs resilience where measured); returns the report's path."""
    cells = collect(read_rows(csv_path), dataset)
    stem = csv_path.with_suffix("")
    plot_accuracy(cells, Path(f"{stem}-accuracy-vs-bytes.png"), "bytes", "MB communicated (up + down, all clients)")
    plot_accuracy(cells, Path(f"{stem}-accuracy-vs-rounds.png"), "rounds", "rounds")
    plot_resilience(cells, Path(f"{stem}-resilience.png"))
    report = Path(f"{stem}-report.md")
    personalization = goal_table(cells)
    if personalization:  # the personalization matrix: its own goal instead of the paper's claims
        checks = "\n## The personalization goal (DSD vs the best peer, beyond the seed spread)\n\n" + personalization
    else:
        checks = "\n## The paper's claims\n\n" + claims_table(cells)
    report.write_text(f"# {dataset}\n\n" + table(cells) + checks)
    return report
