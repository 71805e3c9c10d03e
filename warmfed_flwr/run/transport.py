"""What crosses the network: models and adapters as ArrayRecords of named arrays, never pickles."""

from __future__ import annotations

from typing import Mapping

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, RecordDict
from torch import nn

from warmfed_flwr.data.types import ImageSplit, pixels_as


def model_to_record(model: nn.Module) -> ArrayRecord:
    """The model's state dict (float tensors as they are) as an ArrayRecord."""
    return ArrayRecord(model.state_dict())


def load_record_into(model: nn.Module, record: ArrayRecord) -> nn.Module:
    """Load an ArrayRecord produced by `model_to_record` into `model` (strict key match)."""
    model.load_state_dict(record.to_torch_state_dict(), strict=True)
    return model


def split_to_record(split: ImageSplit) -> ArrayRecord:
    """Images and labels as an ArrayRecord ("images" as 8-bit pixels, "labels"), for sending to a client."""
    return ArrayRecord({"images": pixels_as(split.float_images(), torch.uint8), "labels": split.labels})


def record_to_split(record: ArrayRecord) -> ImageSplit:
    """The ImageSplit `split_to_record` sent (uint8 images)."""
    tensors = record.to_torch_state_dict()
    return ImageSplit(tensors["images"], tensors["labels"])


def arrays_to_record(arrays: Mapping[str, np.ndarray]) -> ArrayRecord:
    """Named numpy arrays (an adapter) as an ArrayRecord, keys kept."""
    return ArrayRecord({name: Array(np.ascontiguousarray(value)) for name, value in arrays.items()})


def record_to_arrays(record: ArrayRecord) -> dict[str, np.ndarray]:
    """Named numpy arrays back from an ArrayRecord."""
    return {name: array.numpy() for name, array in record.items()}


def content_bytes(content: RecordDict) -> int:
    """Payload bytes of a message's content (arrays, metrics and configs)."""
    return sum(record.count_bytes() for record in content.values())
