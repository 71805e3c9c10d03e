"""The shared contract of every data set: images and labels per domain and per client.

A domain's splits are either decoded images in memory (`ImageSplit`: the embedded digits, the
synthetic pool) or encoded image files that nothing has decoded yet (`ImageFiles`: every data set
on disk). Counting clients and partitioning need only the labels, which both kinds have; a client
decodes its own share alone (`warmfed_flwr.data.load_client_data`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol, Sequence, Union

import numpy as np
import torch

PIXEL_DTYPES = (torch.float32, torch.uint8)
UINT8_MAX = 255.0


def float_pixels(images: torch.Tensor) -> torch.Tensor:
    """Images as float32 in [0, 1]: uint8 ones divided by 255, float32 ones returned as they are."""
    return images.float().div_(UINT8_MAX) if images.dtype == torch.uint8 else images


def pixels_as(images: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Float images in [0, 1] stored as `dtype`: float32 unchanged, uint8 rounded to 0..255."""
    if dtype == torch.float32:
        return images.float()
    if dtype == torch.uint8:
        return (images.float() * UINT8_MAX).round_().clamp_(0, UINT8_MAX).to(torch.uint8)
    raise ValueError(f"images are kept as float32 or uint8, not {dtype}")


class _Labelled:
    """What every split offers without its pixels: its size, its labels and subsets of them."""

    labels: torch.Tensor

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def class_counts(self, num_classes: int) -> list[int]:
        """How many images each of the `num_classes` classes has (zeros included)."""
        return torch.bincount(self.labels, minlength=num_classes).tolist()


@dataclass(frozen=True)
class ImageSplit(_Labelled):
    """Decoded images (N x 3 x H x W: float32 in [0, 1], or uint8 in 0..255) and their int64 labels (N).

    Image files are kept as uint8, a quarter of float32's memory and exactly what 8-bit files
    hold; training converts each batch (`float_pixels`). Splits may be cached and shared between
    callers: treat the tensors as read-only.
    """

    images: torch.Tensor
    labels: torch.Tensor

    def __post_init__(self) -> None:
        if self.images.ndim != 4 or self.images.shape[1] != 3:
            raise ValueError(f"ImageSplit.images must be N x 3 x H x W, got shape {tuple(self.images.shape)}")
        if self.images.dtype not in PIXEL_DTYPES or self.labels.dtype != torch.int64:
            raise ValueError(
                f"ImageSplit wants float32 or uint8 images and int64 labels, got {self.images.dtype} and {self.labels.dtype}"
            )
        if self.labels.shape != (self.images.shape[0],):
            raise ValueError(
                f"ImageSplit has {self.images.shape[0]} images but labels of shape {tuple(self.labels.shape)}"
            )

    def float_images(self) -> torch.Tensor:
        """All images as float32 in [0, 1] (the stored tensor itself when it is float32)."""
        return float_pixels(self.images)

    def subset(self, indices: Sequence[int] | np.ndarray | torch.Tensor) -> ImageSplit:
        """The images at `indices`, in that order."""
        index = torch.as_tensor(indices, dtype=torch.int64)
        return ImageSplit(self.images[index], self.labels[index])


class EncodedImage(Protocol):
    """An image that is not a file of its own (e.g. a row of a Hugging Face data set)."""

    name: str

    def open(self) -> Path | BinaryIO:
        """The encoded bytes as a path or binary stream PIL can open."""


ImageSource = Union[Path, EncodedImage]


def source_name(source: ImageSource) -> str:
    """How errors and warnings name an image source."""
    return str(source) if isinstance(source, Path) else source.name


@dataclass(frozen=True, eq=False)
class ImageFiles(_Labelled):
    """Encoded images (files, or rows of a data set) and their int64 labels; nothing decoded yet.

    Holding one costs a path and a label per image, whatever the images' size, so every process
    can know the whole data set's layout; `warmfed_flwr.data.images.decode` turns a client's share
    into an `ImageSplit`.
    """

    sources: tuple[ImageSource, ...]
    labels: torch.Tensor

    def __post_init__(self) -> None:
        if self.labels.dtype != torch.int64 or self.labels.shape != (len(self.sources),):
            raise ValueError(
                f"ImageFiles has {len(self.sources)} sources but labels of shape {tuple(self.labels.shape)} "
                f"and dtype {self.labels.dtype}; want int64 labels, one per source"
            )

    @classmethod
    def of(cls, sources: Sequence[ImageSource], labels: Sequence[int]) -> ImageFiles:
        """From a list of sources and their labels."""
        return cls(tuple(sources), torch.tensor(list(labels), dtype=torch.int64))

    def subset(self, indices: Sequence[int] | np.ndarray | torch.Tensor) -> ImageFiles:
        """The sources at `indices`, in that order."""
        index = torch.as_tensor(indices, dtype=torch.int64)
        return ImageFiles(tuple(self.sources[i] for i in index.tolist()), self.labels[index])


Split = Union[ImageSplit, ImageFiles]


@dataclass(frozen=True)
class DomainData:
    """One domain (style, hospital, ...) with its own train and test split (decoded or not)."""

    name: str
    train: Split
    test: Split


@dataclass(frozen=True)
class ClientData:
    """What one client owns, decoded: a shard of one domain's train and test split, and a line per split that had
    unreadable image files (skipped)."""

    partition_id: int
    domain: str
    train: ImageSplit
    test: ImageSplit
    class_names: tuple[str, ...]
    unreadable: tuple[str, ...] = ()


@dataclass(frozen=True)
class DomainSet:
    """A whole data set: its domains in a fixed order and the class names shared by all of them."""

    domains: tuple[DomainData, ...]
    class_names: tuple[str, ...]
