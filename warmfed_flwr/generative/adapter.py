"""LoRA adapters as they travel between client and server: agreed settings and validation.

Backbone-agnostic: an adapter is a mapping from the backbone's own LoRA parameter names to
float32 numpy arrays, sent in the agreed `lora.upload-dtype` (`upload.py`) next to a small config
(backbone, rank, alpha, targets, upload dtype). The server checks every reply against the settings
it asked for before it decodes it and loads anything into a model.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from warmfed_flwr.config import LoraSettings
from warmfed_flwr.generative.upload import EncodedAdapter, decode_adapter, rank_axis

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
    return {"backbone": lora.backbone, "rank": lora.rank, "alpha": lora.alpha, "targets": lora.targets,
            "upload-dtype": lora.upload_dtype}


def adapter_bytes(arrays: Mapping[str, np.ndarray]) -> int:
    """Total payload bytes of the adapter's tensors."""
    return sum(int(array.nbytes) for array in arrays.values())


def validate_adapter(
    adapter: EncodedAdapter | Mapping[str, np.ndarray],
    config: Mapping[str, object],
    expected: Mapping[str, tuple[int, ...]],
    lora: LoraSettings,
    client: str,
) -> dict[str, np.ndarray]:
    """Check a client's adapter as sent against the agreed settings and the backbone's expected shapes.

    `adapter` is what arrived (a plain mapping is a float32 upload). Returns the decoded float32
    arrays in the order of `expected`. Raises AdapterError naming the client and the offending key
    for: a config differing from `adapter_config(lora)`, missing or extra tensors or scales, payload
    bytes above `lora.max_bytes`, a tensor not of the agreed upload dtype and expected shape, an int8
    scale that is not a finite, non-negative float32 vector of the tensor's rank, and a decoded
    tensor holding NaN or infinite values.
    """
    sent = adapter if isinstance(adapter, EncodedAdapter) else EncodedAdapter(dict(adapter))
    _check_config(config, lora, client)
    _check_names(sent.tensors, expected, client, "tensor")
    if lora.upload_dtype == "int8":
        _check_names(sent.scales, expected, client, "scale")
    elif sent.scales:
        raise AdapterError(client, sorted(sent.scales)[0], f"scales sent with a {lora.upload_dtype} upload")
    total = sent.nbytes()
    if total > lora.max_bytes:
        largest = max(sent.tensors, key=lambda name: sent.tensors[name].nbytes)
        raise AdapterError(
            client, largest, f"adapter holds {total} bytes, more than lora.max-bytes = {lora.max_bytes} (largest tensor)"
        )
    for name, shape in expected.items():
        _check_tensor(sent.tensors[name], shape, np.dtype(lora.upload_dtype), name, client)
        if lora.upload_dtype == "int8":
            _check_scale(sent.scales[name], shape[rank_axis(name)], name, client)
    decoded = decode_adapter(sent)
    for name in expected:
        if not np.isfinite(decoded[name]).all():
            raise AdapterError(client, name, "holds NaN or infinite values")
    return {name: decoded[name] for name in expected}


def _check_names(arrays: Mapping[str, object], expected: Mapping[str, object], client: str, what: str) -> None:
    """Raise AdapterError unless `arrays` has exactly the keys of `expected`."""
    missing = sorted(set(expected) - set(arrays))
    if missing:
        raise AdapterError(client, missing[0], f"{what} missing ({len(missing)} expected {what}s missing)")
    extra = sorted(set(arrays) - set(expected))
    if extra:
        raise AdapterError(client, extra[0], f"unexpected {what} ({len(extra)} unexpected in all)")


def _check_config(config: Mapping[str, object], lora: LoraSettings, client: str) -> None:
    """Raise AdapterError unless `config` carries exactly the agreed LoRA settings."""
    for key, agreed in adapter_config(lora).items():
        if key not in config:
            raise AdapterError(client, f"config.{key}", f"missing, expected {agreed!r}")
        if config[key] != agreed:
            raise AdapterError(client, f"config.{key}", f"{config[key]!r} differs from the agreed {agreed!r}")


def _check_tensor(array: object, shape: tuple[int, ...], dtype: np.dtype, name: str, client: str) -> None:
    """Raise AdapterError unless `array` is a numpy array of `dtype` and `shape`."""
    if not isinstance(array, np.ndarray):
        raise AdapterError(client, name, f"expected a numpy array, got {type(array).__name__}")
    if array.dtype != dtype:
        raise AdapterError(client, name, f"dtype {array.dtype}, expected {dtype} (lora.upload-dtype)")
    if tuple(array.shape) != tuple(shape):
        raise AdapterError(client, name, f"shape {tuple(array.shape)}, expected {tuple(shape)}")


def _check_scale(scale: object, rank: int, name: str, client: str) -> None:
    """Raise AdapterError unless `scale` is a finite, non-negative float32 vector of `rank` entries."""
    if not isinstance(scale, np.ndarray) or scale.dtype != np.float32 or scale.shape != (rank,):
        described = f"{scale.dtype} {scale.shape}" if isinstance(scale, np.ndarray) else type(scale).__name__
        raise AdapterError(client, name, f"int8 scale is {described}, expected float32 ({rank},)")
    if not np.isfinite(scale).all() or (scale < 0).any():
        raise AdapterError(client, name, "int8 scale holds negative, NaN or infinite values")
