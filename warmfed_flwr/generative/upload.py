"""How an adapter travels: its tensors as float32, float16 or 8-bit integers (`lora.upload-dtype`).

A client encodes its fitted float32 adapter just before it sends it (after a private fit this is
post-processing: it spends no privacy budget); the server decodes it back to float32 before it
validates and uses it. `int8` is symmetric linear quantization with one float32 scale per LoRA
rank component (rows of an A matrix, columns of a B matrix), so a rank-r tensor carries r scales:
value = int8 x scale, with |value| <= 127 x scale.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

import numpy as np

from warmfed_flwr.generative.lora_targets import LORA_B_KEY

UPLOAD_DTYPES = ("float32", "float16", "int8")
INT8_LEVELS = 127  # symmetric: -127..127, so that 0 is exact and the range is the same on both sides


@dataclass(frozen=True)
class EncodedAdapter:
    """An adapter as sent: `tensors` in the upload dtype and, for int8, one scale vector per tensor."""

    tensors: dict[str, np.ndarray]
    scales: dict[str, np.ndarray] = field(default_factory=dict)

    def nbytes(self) -> int:
        """Payload bytes: the tensors and their scales."""
        return sum(int(a.nbytes) for a in self.tensors.values()) + sum(int(s.nbytes) for s in self.scales.values())


def rank_axis(name: str) -> int:
    """The axis of LoRA tensor `name` that runs over rank components: 1 for B (out x r), 0 for A (r x in)."""
    return 1 if LORA_B_KEY.search(name) else 0


def encode_adapter(adapter: Mapping[str, np.ndarray], dtype: str) -> EncodedAdapter:
    """`adapter` (float32 arrays) in the upload `dtype`; raises ValueError naming a tensor float16 cannot hold."""
    if dtype == "float32":
        return EncodedAdapter({name: np.asarray(a, dtype=np.float32) for name, a in adapter.items()})
    if dtype == "float16":
        limit = np.finfo(np.float16).max
        for name, array in adapter.items():
            if np.abs(array).max(initial=0.0) > limit:
                raise ValueError(f"lora.upload-dtype 'float16': tensor '{name}' holds values beyond float16's range")
        return EncodedAdapter({name: np.asarray(a, dtype=np.float16) for name, a in adapter.items()})
    if dtype == "int8":
        tensors, scales = {}, {}
        for name, array in adapter.items():
            tensors[name], scales[name] = _quantize(np.asarray(array, dtype=np.float32), rank_axis(name))
        return EncodedAdapter(tensors, scales)
    raise ValueError(f"config key 'lora.upload-dtype': unknown value {dtype!r} (expected one of {', '.join(UPLOAD_DTYPES)})")


def decode_adapter(encoded: EncodedAdapter) -> dict[str, np.ndarray]:
    """The float32 adapter back from `encoded` (int8 tensors times their scales; float16 widened)."""
    decoded = {}
    for name, array in encoded.tensors.items():
        if array.dtype == np.int8:
            shape = [1] * array.ndim
            shape[rank_axis(name)] = -1
            decoded[name] = array.astype(np.float32) * encoded.scales[name].reshape(shape)
        else:
            decoded[name] = array.astype(np.float32)
    return decoded


def _quantize(array: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """`array` as int8 with one float32 scale per index along `axis` (max |value| / 127; 0 for all-zero slices)."""
    others = tuple(i for i in range(array.ndim) if i != axis)
    peak = np.abs(array).max(axis=others, keepdims=True) if others else np.abs(array)
    scale = (peak / INT8_LEVELS).astype(np.float32)
    safe = np.where(scale > 0, scale, np.float32(1.0))
    quantized = np.clip(np.rint(array / safe), -INT8_LEVELS, INT8_LEVELS).astype(np.int8)
    return quantized, scale.reshape(-1)
