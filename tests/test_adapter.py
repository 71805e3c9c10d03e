"""Adapter validation and sizing (backbone-agnostic, no model needed)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from warmfed_flwr.config import Settings
from warmfed_flwr.generative.adapter import (
    AdapterError,
    adapter_bytes,
    adapter_config,
    validate_adapter,
)

CLIENT = "client-3"
EXPECTED = {"block.to_q.lora_A.weight": (8, 16), "block.to_q.lora_B.weight": (16, 8)}


@pytest.fixture
def lora():
    return Settings.from_run_config({}).lora


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
    }


def test_valid_adapter_passes_unchanged(arrays, lora):
    validated = validate_adapter(arrays, adapter_config(lora), EXPECTED, lora, CLIENT)
    assert list(validated) == list(EXPECTED)
    for name in EXPECTED:
        np.testing.assert_array_equal(validated[name], arrays[name])


def test_adapter_bytes_sums_tensor_bytes(arrays):
    assert adapter_bytes(arrays) == 4 * (8 * 16 + 16 * 8)


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
    small = replace(lora, max_bytes=adapter_bytes(arrays) - 1)
    with pytest.raises(AdapterError, match="max-bytes") as caught:
        validate_adapter(arrays, adapter_config(small), EXPECTED, small, CLIENT)
    assert caught.value.client == CLIENT and caught.value.key in EXPECTED
