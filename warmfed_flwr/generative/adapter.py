"""LoRA adapters as they travel between client and server: agreed settings and validation.

Backbone-agnostic: an adapter is a mapping from the backbone's own LoRA parameter names to
float32 numpy arrays, sent next to a small config (backbone, rank, alpha, targets). The server
checks every reply against the settings it asked for before it loads anything into a model.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from warmfed_flwr.config import LoraSettings

# An exported adapter's file name: the one diffusers' load_lora_weights looks for.
ADAPTER_FILE = "pytorch_lora_weights.safetensors"

class AdapterError(ValueError):
    """A client's adapter does not match the agreed settings; names the client and the key."""

    def __init__(self, client: str, key: str, problem: str) -> None:
        self.client = client
        self.key = key
        super().__init__(f"adapter from client '{client}', key '{key}': {problem}")


def adapter_config(lora: LoraSettings) -> dict[str, int | str]:
    """The settings a client sends next to its adapter tensors (and the server expects)."""
    return {"backbone": lora.backbone, "rank": lora.rank, "alpha": lora.alpha, "targets": lora.targets}


def adapter_bytes(arrays: Mapping[str, np.ndarray]) -> int:
    """Total payload bytes of the adapter's tensors."""
    return sum(int(array.nbytes) for array in arrays.values())


def validate_adapter(
    arrays: Mapping[str, np.ndarray],
    config: Mapping[str, object],
    expected: Mapping[str, tuple[int, ...]],
    lora: LoraSettings,
    client: str,
) -> dict[str, np.ndarray]:
    """Check a client's adapter against the agreed settings and the backbone's expected shapes.

    Returns the arrays in the order of `expected`. Raises AdapterError naming the client and the
    offending key for: a config differing from `adapter_config(lora)`, missing or extra tensors,
    total bytes above `lora.max_bytes`, and any tensor that is not a finite float32 array of the
    expected shape.
    """
    _check_config(config, lora, client)
    missing = sorted(set(expected) - set(arrays))
    if missing:
        raise AdapterError(client, missing[0], f"missing ({len(missing)} expected tensors missing)")
    extra = sorted(set(arrays) - set(expected))
    if extra:
        raise AdapterError(client, extra[0], f"unexpected tensor ({len(extra)} unexpected in all)")
    total = adapter_bytes(arrays)
    if total > lora.max_bytes:
        largest = max(arrays, key=lambda name: arrays[name].nbytes)
        raise AdapterError(
            client, largest, f"adapter holds {total} bytes, more than lora.max-bytes = {lora.max_bytes} (largest tensor)"
        )
    return {name: _checked_tensor(arrays[name], shape, name, client) for name, shape in expected.items()}


def _check_config(config: Mapping[str, object], lora: LoraSettings, client: str) -> None:
    """Raise AdapterError unless `config` carries exactly the agreed LoRA settings."""
    for key, agreed in adapter_config(lora).items():
        if key not in config:
            raise AdapterError(client, f"config.{key}", f"missing, expected {agreed!r}")
        if config[key] != agreed:
            raise AdapterError(client, f"config.{key}", f"{config[key]!r} differs from the agreed {agreed!r}")


def _checked_tensor(array: object, shape: tuple[int, ...], name: str, client: str) -> np.ndarray:
    """The array itself if it is a finite float32 numpy array of `shape`; AdapterError otherwise."""
    if not isinstance(array, np.ndarray):
        raise AdapterError(client, name, f"expected a numpy array, got {type(array).__name__}")
    if array.dtype != np.float32:
        raise AdapterError(client, name, f"dtype {array.dtype}, expected float32")
    if tuple(array.shape) != tuple(shape):
        raise AdapterError(client, name, f"shape {tuple(array.shape)}, expected {tuple(shape)}")
    if not np.isfinite(array).all():
        raise AdapterError(client, name, "holds NaN or infinite values")
    return array
