"""The shared contract of every data set: images and labels per domain and per client."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch


@dataclass(frozen=True)
class ImageSplit:
    """Images (float32 N x 3 x H x W in [0, 1]) and their int64 labels (N).

    Splits may be cached and shared between callers: treat the tensors as read-only.
    """

    images: torch.Tensor
    labels: torch.Tensor

    def __post_init__(self) -> None:
        if self.images.ndim != 4 or self.images.shape[1] != 3:
            raise ValueError(f"ImageSplit.images must be N x 3 x H x W, got shape {tuple(self.images.shape)}")
        if self.images.dtype != torch.float32 or self.labels.dtype != torch.int64:
            raise ValueError(
                f"ImageSplit wants float32 images and int64 labels, got {self.images.dtype} and {self.labels.dtype}"
            )
        if self.labels.shape != (self.images.shape[0],):
            raise ValueError(
                f"ImageSplit has {self.images.shape[0]} images but labels of shape {tuple(self.labels.shape)}"
            )

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def class_counts(self, num_classes: int) -> list[int]:
        """How many images each of the `num_classes` classes has (zeros included)."""
        return torch.bincount(self.labels, minlength=num_classes).tolist()

    def subset(self, indices: Sequence[int] | np.ndarray | torch.Tensor) -> ImageSplit:
        """The images at `indices`, in that order."""
        index = torch.as_tensor(indices, dtype=torch.int64)
        return ImageSplit(self.images[index], self.labels[index])


@dataclass(frozen=True)
class DomainData:
    """One domain (style, hospital, ...) with its own train and test split."""

    name: str
    train: ImageSplit
    test: ImageSplit


@dataclass(frozen=True)
class ClientData:
    """What one client owns: a shard of one domain's train and test split."""

    partition_id: int
    domain: str
    train: ImageSplit
    test: ImageSplit
    class_names: tuple[str, ...]


@dataclass(frozen=True)
class DomainSet:
    """A whole data set: its domains in a fixed order and the class names shared by all of them."""

    domains: tuple[DomainData, ...]
    class_names: tuple[str, ...]
