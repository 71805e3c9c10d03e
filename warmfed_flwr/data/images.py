"""Decoding image files (or PIL images) into the package's uint8 tensors; unreadable files are skipped, not fatal."""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO, Sequence

import torch
from PIL import Image
from torchvision.transforms import functional as TF

from warmfed_flwr.data.types import ImageFiles, ImageSplit, Split, source_name
from warmfed_flwr.logs import logger


SKIPPED_SHOWN = 10
UNREADABLE_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)


def pil_to_tensor(image: Image.Image, image_size: int) -> torch.Tensor:
    """A PIL image (any mode) as RGB 3 x image_size x image_size uint8, bilinearly resized."""
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")  # palette transparency must go through RGBA to convert cleanly
    rgb = image.convert("RGB").resize((image_size, image_size), Image.Resampling.BILINEAR)
    return TF.pil_to_tensor(rgb)


def read_image(source: Path | BinaryIO, image_size: int) -> torch.Tensor:
    """One image file (path or binary stream) as 3 x image_size x image_size uint8.

    PIL's errors for unreadable files propagate.
    """
    with Image.open(source) as image:
        image.draft("RGB", (image_size, image_size))  # JPEG: decode at a reduced scale, much faster
        return pil_to_tensor(image, image_size)


def decode(files: ImageFiles, image_size: int) -> tuple[ImageSplit, list[str]]:
    """The readable images of `files` at `image_size` px (uint8) with their labels, and the names of the unreadable.

    One image is decoded at a time into a preallocated tensor, so the peak is the result itself.
    """
    images = torch.empty((len(files), 3, image_size, image_size), dtype=torch.uint8)
    kept, skipped = [], []
    for source, label in zip(files.sources, files.labels.tolist(), strict=True):
        try:
            images[len(kept)] = read_image(source if isinstance(source, Path) else source.open(), image_size)
        except UNREADABLE_ERRORS:
            skipped.append(source_name(source))
            continue
        kept.append(label)
    return ImageSplit(images[: len(kept)].clone() if skipped else images, torch.tensor(kept, dtype=torch.int64)), skipped


def skipped_files_line(skipped: Sequence[str], where: str) -> str:
    """One line saying how many images of `where` were unreadable, naming the first few."""
    shown = ", ".join(skipped[:SKIPPED_SHOWN])
    more = f" and {len(skipped) - SKIPPED_SHOWN} more" if len(skipped) > SKIPPED_SHOWN else ""
    return f"skipped {len(skipped)} unreadable image file(s) of {where}: {shown}{more}"


def decoded(split: Split, image_size: int, where: str, unreadable: list[str] | None = None) -> ImageSplit:
    """`split`'s images in memory: image files decoded (uint8), others as they are.

    Unreadable files are skipped, and a line naming them is added to `unreadable`, or logged as a warning
    when no list is given.
    """
    if isinstance(split, ImageSplit):
        return split
    images, skipped = decode(split, image_size)
    if skipped and unreadable is not None:
        unreadable.append(skipped_files_line(skipped, where))
    elif skipped:
        logger.warning("%s", skipped_files_line(skipped, where))
    return images
