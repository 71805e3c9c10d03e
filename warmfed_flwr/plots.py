"""Figures a run leaves next to results.json: synthetic vs real samples, and per-client accuracies."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
from matplotlib.figure import Figure

from warmfed_flwr.data.types import ImageSplit
from warmfed_flwr.results import ClientResult


def one_per_class(split: ImageSplit, num_classes: int) -> list[torch.Tensor | None]:
    """The first image of every class (None where the split has none)."""
    out: list[torch.Tensor | None] = []
    for label in range(num_classes):
        hits = (split.labels == label).nonzero()
        out.append(split.images[int(hits[0])] if len(hits) else None)
    return out


def save_sample_grid(path: Path, rows: Sequence[tuple[str, ImageSplit]], class_names: Sequence[str]) -> None:
    """A grid with one row per (title, split) and one column per class."""
    columns = len(class_names)
    fig = Figure(figsize=(columns * 0.9, len(rows) * 0.95 + 0.4))
    axes = fig.subplots(len(rows), columns, squeeze=False)
    for r, (title, split) in enumerate(rows):
        for c, image in enumerate(one_per_class(split, columns)):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            if image is not None:
                ax.imshow(image.permute(1, 2, 0).clamp(0, 1).numpy())
            if r == 0:
                ax.set_title(class_names[c], fontsize=8)
        axes[r][0].set_ylabel(title, rotation=0, ha="right", va="center", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def save_accuracy_plot(path: Path, clients: Sequence[ClientResult], title: str) -> None:
    """Per-client global vs personalized accuracy as grouped bars."""
    clients = sorted(clients, key=lambda c: c.partition_id)
    xs = range(len(clients))
    fig = Figure(figsize=(max(4.0, 0.6 * len(clients) + 2), 3.2))
    ax = fig.subplots()
    width = 0.4
    ax.bar([x - width / 2 for x in xs], [c.global_acc or 0.0 for c in clients], width, label="global model")
    ax.bar([x + width / 2 for x in xs], [c.personal_acc or 0.0 for c in clients], width, label="personalized")
    ax.set_xticks(list(xs), [f"{c.partition_id}\n{c.domain}" for c in clients], fontsize=7)
    ax.set_ylim(0, 1)
    ax.set_ylabel("test accuracy")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
