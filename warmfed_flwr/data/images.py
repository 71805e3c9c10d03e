"""Decoding image files (or PIL images) into the package's tensors; unreadable files are skipped, not fatal."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import BinaryIO, Sequence

import torch
from PIL import Image
from torchvision.transforms import functional as TF

from warmfed_flwr.data.types import ImageSplit

logger = logging.getLogger(__name__)

SKIPPED_SHOWN = 10
UNREADABLE_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)


def pil_to_tensor(image: Image.Image, image_size: int) -> torch.Tensor:
    """A PIL image (any mode) as RGB 3 x image_size x image_size float32 in [0, 1], bilinearly resized."""
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")  # palette transparency must go through RGBA to convert cleanly
    rgb = image.convert("RGB").resize((image_size, image_size), Image.Resampling.BILINEAR)
    return TF.pil_to_tensor(rgb).float().div_(255.0)


def read_image(source: Path | BinaryIO, image_size: int) -> torch.Tensor:
    """One image file (path or binary stream) as 3 x image_size x image_size float32 in [0, 1].

    PIL's errors for unreadable files propagate.
    """
    with Image.open(source) as image:
        image.draft("RGB", (image_size, image_size))  # JPEG: decode at a reduced scale, much faster
        return pil_to_tensor(image, image_size)


def read_labelled_images(
    sources: Sequence[Path | BinaryIO], labels: Sequence[int], image_size: int, names: Sequence[str] | None = None
) -> tuple[ImageSplit, list[str]]:
    """The readable ones of `sources` with their `labels`, and the names of those PIL could not open or decode.

    A source is named by `names` if given, else by its path.
    """
    names = [str(source) for source in sources] if names is None else names
    images, kept, skipped = [], [], []
    for source, label, name in zip(sources, labels, names, strict=True):
        try:
            images.append(read_image(source, image_size))
        except UNREADABLE_ERRORS:
            skipped.append(name)
            continue
        kept.append(label)
    stacked = torch.stack(images) if images else torch.empty(0, 3, image_size, image_size)
    return ImageSplit(stacked, torch.tensor(kept, dtype=torch.int64)), skipped


def warn_skipped(skipped: Sequence[str], root: Path) -> None:
    """Log one warning saying how many files under `root` were unreadable, naming the first few."""
    if not skipped:
        return
    shown = ", ".join(skipped[:SKIPPED_SHOWN])
    more = f" and {len(skipped) - SKIPPED_SHOWN} more" if len(skipped) > SKIPPED_SHOWN else ""
    logger.warning("skipped %d unreadable image file(s) under %s: %s%s", len(skipped), root, shown, more)
