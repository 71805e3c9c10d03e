"""Adapter validation and sizing (backbone-agnostic, no model needed)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from warmfed_flwr.config import Settings
from warmfed_flwr.generative.adapter import (
    AdapterError,
    adapter_config,
    validate_adapter,
)
from warmfed_flwr.generative.upload import PACKED, SCALES, EncodedAdapter, decode_adapter, encode_adapter

CLIENT = "client-3"
EXPECTED = {"block.to_q.lora_A.weight": (8, 16), "block.to_q.lora_B.weight": (16, 8)}


@pytest.fixture
def lora():
    """The default LoRA settings with float32 uploads: named tensors, as fitted (the int8 default packs them)."""
    return Settings.from_run_config({"lora.upload-dtype": "float32"}).lora


@pytest.fixture
def arrays():
    rng = np.random.default_rng(0)
    return {name: rng.normal(size=shape).astype(np.float32) for name, shape in EXPECTED.items()}


def test_adapter_config_holds_the_agreed_settings(lora):
    assert adapter_config(lora) == {
        "backbone": lora.backbone,
        "rank": lora.rank,
        "alpha": lora.alpha,
        "targets": lora.targets,
        "upload-dtype": lora.upload_dtype,
    }


def test_valid_adapter_passes_unchanged(arrays, lora):
    validated = validate_adapter(arrays, adapter_config(lora), EXPECTED, lora, CLIENT)
    assert list(validated) == list(EXPECTED)
    for name in EXPECTED:
        np.testing.assert_array_equal(validated[name], arrays[name])


def test_a_float32_upload_counts_its_tensor_bytes(arrays):
    assert EncodedAdapter(arrays).nbytes() == 4 * (8 * 16 + 16 * 8)


def _missing(arrays, config):
    del arrays["block.to_q.lora_B.weight"]


def _extra(arrays, config):
    arrays["block.to_k.lora_A.weight"] = np.zeros((8, 16), np.float32)


def _wrong_shape(arrays, config):
    arrays["block.to_q.lora_B.weight"] = np.zeros((16, 4), np.float32)


def _float64(arrays, config):
    arrays["block.to_q.lora_B.weight"] = arrays["block.to_q.lora_B.weight"].astype(np.float64)


def _nan(arrays, config):
    arrays["block.to_q.lora_B.weight"][3, 2] = np.nan


def _inf(arrays, config):
    arrays["block.to_q.lora_B.weight"][0, 0] = -np.inf


def _rank(arrays, config):
    config["rank"] = 4


def _targets(arrays, config):
    config["targets"] = "attention"


def _backbone(arrays, config):
    config["backbone"] = "stable-diffusion"


def _no_alpha(arrays, config):
    del config["alpha"]


@pytest.mark.parametrize(
    ("corrupt", "key", "problem"),
    [
        (_missing, "block.to_q.lora_B.weight", "missing"),
        (_extra, "block.to_k.lora_A.weight", "unexpected"),
        (_wrong_shape, "block.to_q.lora_B.weight", "shape"),
        (_float64, "block.to_q.lora_B.weight", "float64"),
        (_nan, "block.to_q.lora_B.weight", "NaN"),
        (_inf, "block.to_q.lora_B.weight", "infinite"),
        (_rank, "config.rank", "differs"),
        (_targets, "config.targets", "differs"),
        (_backbone, "config.backbone", "differs"),
        (_no_alpha, "config.alpha", "missing"),
    ],
)
def test_each_validation_failure_names_client_and_key(arrays, lora, corrupt, key, problem):
    config = adapter_config(lora)
    corrupt(arrays, config)
    with pytest.raises(AdapterError, match=problem) as caught:
        validate_adapter(arrays, config, EXPECTED, lora, CLIENT)
    assert (caught.value.client, caught.value.key) == (CLIENT, key)
    assert f"'{CLIENT}'" in str(caught.value) and f"'{key}'" in str(caught.value)


def test_oversized_adapter_is_refused(arrays, lora):
    small = replace(lora, max_bytes=EncodedAdapter(arrays).nbytes() - 1)
    with pytest.raises(AdapterError, match="max-bytes") as caught:
        validate_adapter(arrays, adapter_config(small), EXPECTED, small, CLIENT)
    assert caught.value.client == CLIENT and caught.value.key in EXPECTED


@pytest.mark.parametrize(("dtype", "bytes_per_value", "tolerance"), [("float16", 2, 1e-3), ("int8", 1, 1 / 127)])
def test_smaller_uploads_decode_close_to_the_fitted_adapter(arrays, lora, dtype, bytes_per_value, tolerance):
    """float16 halves and int8 quarters the values' bytes, packed into one array; the server's decoded adapter stays
    within the encoding's resolution (int8: half a step of the largest value of each rank component)."""
    agreed = replace(lora, upload_dtype=dtype)
    sent = encode_adapter(arrays, dtype)
    values = sum(a.size for a in arrays.values())
    assert list(sent.tensors) == [PACKED] and sent.tensors[PACKED].shape == (values,)
    assert sent.nbytes() == bytes_per_value * values + (4 * 8 * 2 if dtype == "int8" else 0)  # rank 8: 8 scales each
    decoded = validate_adapter(sent, adapter_config(agreed), EXPECTED, agreed, CLIENT)
    assert list(decoded) == list(EXPECTED)
    for name, fitted in arrays.items():
        assert decoded[name].dtype == np.float32 and decoded[name].shape == fitted.shape
        assert np.abs(decoded[name] - fitted).max() <= np.abs(fitted).max() * tolerance
        assert np.abs(decoded[name] - fitted).max() > 0  # a lossy encoding, not the float32 arrays passed through


def test_int8_scales_run_over_rank_components(arrays):
    """One scale per rank component (rows of A, columns of B), so one loud component does not drown the others."""
    arrays["block.to_q.lora_B.weight"][:, 5] *= 1000
    decoded = decode_adapter(encode_adapter(arrays, "int8"), EXPECTED)
    quiet = arrays["block.to_q.lora_B.weight"][:, 0]
    assert np.abs(decoded["block.to_q.lora_B.weight"][:, 0] - quiet).max() <= np.abs(quiet).max() / 127
    assert encode_adapter(arrays, "int8").scales.shape == (16,)  # 8 for A, 8 for B


def test_float16_refuses_values_it_cannot_hold(arrays):
    arrays["block.to_q.lora_A.weight"][0, 0] = 1e6
    with pytest.raises(ValueError, match="'block.to_q.lora_A.weight'.*float16"):
        encode_adapter(arrays, "float16")


def _int8(arrays, lora):
    return encode_adapter(arrays, "int8"), replace(lora, upload_dtype="int8")


def _scales_missing(sent):
    return EncodedAdapter(sent.tensors, None)


def _scale_negative(sent):
    sent.scales[2] = -1.0
    return sent


def _scale_nan(sent):
    sent.scales[2] = np.nan
    return sent


def _scales_short(sent):
    return EncodedAdapter(sent.tensors, sent.scales[:-1])


def _values_short(sent):
    return EncodedAdapter({PACKED: sent.tensors[PACKED][:-1]}, sent.scales)


def _float32_sent_as_int8(sent):
    return EncodedAdapter({PACKED: sent.tensors[PACKED].astype(np.float32)}, sent.scales)


def _named_tensors(sent):
    return EncodedAdapter({"block.to_q.lora_A.weight": sent.tensors[PACKED]}, sent.scales)


@pytest.mark.parametrize(
    ("corrupt", "key", "problem"),
    [
        (_scales_missing, SCALES, "expected a numpy array"),
        (_scale_negative, SCALES, "negative"),
        (_scale_nan, SCALES, "NaN"),
        (_scales_short, SCALES, r"shape \(15,\), expected \(16,\)"),
        (_values_short, PACKED, r"shape \(255,\), expected \(256,\)"),
        (_float32_sent_as_int8, PACKED, "dtype float32, expected int8"),
        (_named_tensors, PACKED, "missing"),
    ],
)
def test_int8_upload_failures_name_client_and_key(arrays, lora, corrupt, key, problem):
    sent, agreed = _int8(arrays, lora)
    with pytest.raises(AdapterError, match=problem) as caught:
        validate_adapter(corrupt(sent), adapter_config(agreed), EXPECTED, agreed, CLIENT)
    assert (caught.value.client, caught.value.key) == (CLIENT, key)


def test_upload_dtype_is_agreed(arrays, lora):
    """A float32 adapter where the server asked for int8 is refused by its config, before any tensor is read."""
    agreed = replace(lora, upload_dtype="int8")
    with pytest.raises(AdapterError, match="differs") as caught:
        validate_adapter(arrays, adapter_config(lora), EXPECTED, agreed, CLIENT)
    assert caught.value.key == "config.upload-dtype"


def test_int8_size_limit_counts_the_bytes_sent(arrays, lora):
    sent, agreed = _int8(arrays, lora)
    exact = replace(agreed, max_bytes=sent.nbytes())
    validate_adapter(sent, adapter_config(exact), EXPECTED, exact, CLIENT)
    small = replace(agreed, max_bytes=sent.nbytes() - 1)
    with pytest.raises(AdapterError, match="max-bytes"):
        validate_adapter(sent, adapter_config(small), EXPECTED, small, CLIENT)
