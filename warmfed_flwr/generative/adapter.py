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
from warmfed_flwr.generative.upload import PACKED, SCALES, EncodedAdapter, decode_adapter, packed_sizes

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
    for: a config differing from `adapter_config(lora)`; payload bytes above `lora.max_bytes`; for
    float32, missing or extra tensors and a tensor not a float32 array of its expected shape; for
    float16 and int8, a packed array not of the agreed dtype or not holding exactly the agreed
    tensors' values, and int8 scales that are not one finite, non-negative float32 per rank
    component; and a decoded tensor holding NaN or infinite values.
    """
    sent = adapter if isinstance(adapter, EncodedAdapter) else EncodedAdapter(dict(adapter))
    _check_config(config, lora, client)
    total = sent.nbytes()
    if total > lora.max_bytes:
        largest = max(sent.tensors, key=lambda name: sent.tensors[name].nbytes)
        raise AdapterError(
            client, largest, f"adapter holds {total} bytes, more than lora.max-bytes = {lora.max_bytes} (largest tensor)"
        )
    if sent.scales is not None and lora.upload_dtype != "int8":
        raise AdapterError(client, SCALES, f"scales sent with a {lora.upload_dtype} upload")
    if lora.upload_dtype == "float32":
        _check_names(sent.tensors, expected, client)
        for name, shape in expected.items():
            _check_array(sent.tensors[name], np.float32, tuple(shape), name, client)
    else:
        _check_names(sent.tensors, {PACKED: ()}, client)
        values, scales = packed_sizes(expected)
        _check_array(sent.tensors[PACKED], np.dtype(lora.upload_dtype), (values,), PACKED, client)
        if lora.upload_dtype == "int8":
            _check_array(sent.scales, np.float32, (scales,), SCALES, client)
            if not np.isfinite(sent.scales).all() or (sent.scales < 0).any():
                raise AdapterError(client, SCALES, "holds negative, NaN or infinite values")
    decoded = decode_adapter(sent, expected)
    for name, tensor in decoded.items():
        if not np.isfinite(tensor).all():
            raise AdapterError(client, name, "holds NaN or infinite values")
    return decoded


def _check_names(arrays: Mapping[str, object], expected: Mapping[str, object], client: str) -> None:
    """Raise AdapterError unless `arrays` has exactly the keys of `expected`."""
    missing = sorted(set(expected) - set(arrays))
    if missing:
        raise AdapterError(client, missing[0], f"missing ({len(missing)} expected tensors missing)")
    extra = sorted(set(arrays) - set(expected))
    if extra:
        raise AdapterError(client, extra[0], f"unexpected tensor ({len(extra)} unexpected in all)")


def _check_config(config: Mapping[str, object], lora: LoraSettings, client: str) -> None:
    """Raise AdapterError unless `config` carries exactly the agreed LoRA settings."""
    for key, agreed in adapter_config(lora).items():
        if key not in config:
            raise AdapterError(client, f"config.{key}", f"missing, expected {agreed!r}")
        if config[key] != agreed:
            raise AdapterError(client, f"config.{key}", f"{config[key]!r} differs from the agreed {agreed!r}")


def _check_array(array: object, dtype: np.dtype, shape: tuple[int, ...], name: str, client: str) -> None:
    """Raise AdapterError unless `array` is a numpy array of `dtype` and `shape`."""
    if not isinstance(array, np.ndarray):
        raise AdapterError(client, name, f"expected a numpy array, got {type(array).__name__}")
    if array.dtype != dtype:
        raise AdapterError(client, name, f"dtype {array.dtype}, expected {np.dtype(dtype)} (lora.upload-dtype)")
    if tuple(array.shape) != shape:
        raise AdapterError(client, name, f"shape {tuple(array.shape)}, expected {shape}")
