"""How an adapter travels: its tensors as float32, float16 or 8-bit integers (`lora.upload-dtype`).

A client encodes its fitted float32 adapter just before it sends it (after a private fit this is
post-processing: it spends no privacy budget); the server decodes it back to float32 before it
validates and uses it.

- `float32`: one named array per LoRA tensor, as fitted.
- `float16` and `int8`: every tensor's values in one array (`PACKED`), the tensors in the order of
  their names (both sides know the names and shapes from the agreed settings), since a named array
  costs about 170 bytes of header and name on the wire, a sixth of an int8 adapter of the tiny
  backbone's 156 tensors. `int8` is symmetric linear quantization with one float32 scale per LoRA
  rank component (rows of an A matrix, columns of a B matrix): value = int8 x scale, |int8| <= 127;
  the scales travel as one array too (`SCALES`, same order).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np

from warmfed_flwr.generative.lora_targets import LORA_B_KEY

UPLOAD_DTYPES = ("float32", "float16", "int8")
PACKED = "packed"  # the key of the one array of a float16 or int8 upload
SCALES = "scales"  # the key of an int8 upload's scales
INT8_LEVELS = 127  # symmetric: -127..127, so that 0 is exact and the range is the same on both sides


@dataclass(frozen=True)
class EncodedAdapter:
    """An adapter as sent: `tensors` (named float32 arrays, or one packed array) and, for int8, its scales."""

    tensors: dict[str, np.ndarray]
    scales: np.ndarray | None = None

    def nbytes(self) -> int:
        """Payload bytes: the values and their scales."""
        scales = 0 if self.scales is None else int(self.scales.nbytes)
        return sum(int(a.nbytes) for a in self.tensors.values()) + scales


def rank_axis(name: str) -> int:
    """The axis of LoRA tensor `name` that runs over rank components: 1 for B (out x r), 0 for A (r x in)."""
    return 1 if LORA_B_KEY.search(name) else 0


def encode_adapter(adapter: Mapping[str, np.ndarray], dtype: str) -> EncodedAdapter:
    """`adapter` (float32 arrays) in the upload `dtype`; raises ValueError naming a tensor float16 cannot hold."""
    if dtype == "float32":
        return EncodedAdapter({name: np.asarray(a, dtype=np.float32) for name, a in adapter.items()})
    names = sorted(adapter)
    if dtype == "float16":
        limit = np.finfo(np.float16).max
        for name in names:
            if np.abs(adapter[name]).max(initial=0.0) > limit:
                raise ValueError(f"lora.upload-dtype 'float16': tensor '{name}' holds values beyond float16's range")
        return EncodedAdapter({PACKED: np.concatenate([np.ravel(adapter[n]).astype(np.float16) for n in names])})
    if dtype == "int8":
        quantized = [_quantize(np.asarray(adapter[name], dtype=np.float32), rank_axis(name)) for name in names]
        return EncodedAdapter({PACKED: np.concatenate([np.ravel(q) for q, _ in quantized])},
                              np.concatenate([scale for _, scale in quantized]))
    raise ValueError(f"config key 'lora.upload-dtype': unknown value {dtype!r} (expected one of {', '.join(UPLOAD_DTYPES)})")


def decode_adapter(encoded: EncodedAdapter, shapes: Mapping[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
    """The float32 adapter back from `encoded`, laid out by `shapes` (the agreed names and shapes; a packed upload
    must hold exactly their values, and an int8 one a scale per rank component of each)."""
    if PACKED not in encoded.tensors:
        return {name: encoded.tensors[name].astype(np.float32) for name in shapes}
    values, scales = encoded.tensors[PACKED], encoded.scales
    decoded, value_at, scale_at = {}, 0, 0
    for name in sorted(shapes):
        shape = tuple(shapes[name])
        size = int(np.prod(shape))
        tensor = values[value_at : value_at + size].reshape(shape).astype(np.float32)
        value_at += size
        if scales is not None:
            axis = rank_axis(name)
            broadcast = [1] * len(shape)
            broadcast[axis] = -1
            tensor *= scales[scale_at : scale_at + shape[axis]].reshape(broadcast)
            scale_at += shape[axis]
        decoded[name] = tensor
    return {name: decoded[name] for name in shapes}


def packed_sizes(shapes: Mapping[str, tuple[int, ...]]) -> tuple[int, int]:
    """How many values and how many int8 scales a packed upload of an adapter with these shapes holds."""
    return (sum(int(np.prod(shape)) for shape in shapes.values()),
            sum(shape[rank_axis(name)] for name, shape in shapes.items()))


def _quantize(array: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """`array` as int8 with one float32 scale per index along `axis` (max |value| / 127; 0 for all-zero slices)."""
    others = tuple(i for i in range(array.ndim) if i != axis)
    peak = np.abs(array).max(axis=others, keepdims=True) if others else np.abs(array)
    scale = (peak / INT8_LEVELS).astype(np.float32)
    safe = np.where(scale > 0, scale, np.float32(1.0))
    quantized = np.clip(np.rint(array / safe), -INT8_LEVELS, INT8_LEVELS).astype(np.int8)
    return quantized, scale.reshape(-1)
