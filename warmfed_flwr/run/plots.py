"""Figures a run leaves next to results.json: synthetic vs real samples, and per-client accuracies."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence, TypeVar

import torch
from matplotlib.figure import Figure
from torch.nn import functional as F

from warmfed_flwr.data.types import ImageSplit
from warmfed_flwr.run.results import ClientResult

T = TypeVar("T")


THUMBNAIL_PX = 64  # larger images are shrunk to this size in sample grids
GAP_PX = 2
MAX_SAMPLE_CLIENTS = 24  # a sample grid shows at most this many clients, spread over all of them


def spread(items: Sequence[T], limit: int = MAX_SAMPLE_CLIENTS) -> list[T]:
    """At most `limit` of `items`, evenly spaced from the first, in order (all of them when there are few)."""
    if len(items) <= limit:
        return list(items)
    return [items[round(i * (len(items) - 1) / (limit - 1))] for i in range(limit)]


def one_per_class(split: ImageSplit, num_classes: int) -> list[torch.Tensor | None]:
    """The first image of every class as float32 in [0, 1] (None where the split has none)."""
    out: list[torch.Tensor | None] = []
    for label in range(num_classes):
        hits = (split.labels == label).nonzero()
        out.append(split.subset(hits[:1, 0]).float_images()[0] if len(hits) else None)
    return out


def sample_mosaic(rows: Sequence[tuple[str, ImageSplit]], num_classes: int) -> torch.Tensor:
    """One H x W x 3 image: per row, the first image of every class, shrunk to at most THUMBNAIL_PX; white gaps."""
    size = min(THUMBNAIL_PX, max(split.images.shape[-1] for _, split in rows))
    cell = size + GAP_PX
    mosaic = torch.ones(3, len(rows) * cell - GAP_PX, num_classes * cell - GAP_PX)
    for r, (_, split) in enumerate(rows):
        for c, image in enumerate(one_per_class(split, num_classes)):
            if image is not None:
                shrunk = F.interpolate(image[None], size=(size, size), mode="bilinear", antialias=True)[0]
                mosaic[:, r * cell : r * cell + size, c * cell : c * cell + size] = shrunk.clamp(0, 1)
    return mosaic.permute(1, 2, 0)


def save_sample_grid(path: Path, rows: Sequence[tuple[str, ImageSplit]], class_names: Sequence[str]) -> None:
    """A grid with one row per (title, split) and one column per class, drawn as one image (cheap for 60+ rows)."""
    columns = len(class_names)
    mosaic = sample_mosaic(rows, columns)
    cell = (mosaic.shape[1] + GAP_PX) / columns
    fig = Figure(figsize=(columns * 0.9 + 1.0, len(rows) * 0.95 + 0.4))
    ax = fig.subplots()
    ax.imshow(mosaic.numpy(), interpolation="nearest")
    ax.set_xticks([cell * (c + 0.5) - GAP_PX for c in range(columns)], list(class_names), fontsize=8)
    ax.xaxis.tick_top()
    ax.set_yticks([cell * (r + 0.5) - GAP_PX for r in range(len(rows))], [title for title, _ in rows], fontsize=8)
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
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
