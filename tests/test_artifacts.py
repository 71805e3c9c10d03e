"""Artifact cache: keys change with every setting that produces the artifact; files round-trip."""

import numpy as np
import torch

import shutil

from warmfed_flwr.config import Settings
from warmfed_flwr.data.types import ImageSplit
from warmfed_flwr.generative.assets import shipped_tiny_base_dir
from warmfed_flwr.run.artifacts import ArtifactCache, adapter_key, base_source_key, pool_key

BASE = Settings.from_run_config({})


def test_adapter_key_changes_with_lora_data_and_seed_but_not_label_count_sharing():
    key = adapter_key(BASE, [0, 1])
    for override in ({"lora.rank": 4}, {"lora.steps": 10}, {"lora.targets": "attention"}, {"seed": 1},
                     {"data.image-size": 32}, {"data.clients-per-domain": 2}, {"lora.model-path": "/x"}):
        assert adapter_key(Settings.from_run_config(override), [0, 1]) != key, override
    assert adapter_key(BASE, [0, 2]) != key
    assert adapter_key(Settings.from_run_config({"lora.send-label-counts": False}), [0, 1]) == key
    assert adapter_key(Settings.from_run_config({"method": "fedavg", "dsd.mode": "none"}), [0, 1]) == key


def test_pool_key_changes_with_generation_settings_label_counts_and_source():
    key = pool_key(BASE, "src")
    for override in ({"generate.steps": 5}, {"generate.guidance": 3.0}, {"generate.images-per-client": 7},
                     {"lora.send-label-counts": False}, {"seed": 2}):
        assert pool_key(Settings.from_run_config(override), "src") != key, override
    assert pool_key(BASE, "other-source") != key
    assert pool_key(Settings.from_run_config({"dsd.mode": "constant", "rounds": 5}), "src") == key


def test_adapters_round_trip_and_are_reused_only_when_every_client_has_one(tmp_path):
    cache = ArtifactCache(tmp_path)
    arrays = {"a.lora_A.weight": np.ones((2, 3), np.float32)}
    cache.save_adapter("k", 0, arrays, {"label_counts": [1, 2], "bytes_up": 10})
    assert not cache.has_adapters("k", [0, 1])
    cache.save_adapter("k", 1, arrays, {"label_counts": None, "bytes_up": 11})
    assert cache.has_adapters("k", [0, 1])
    loaded, info = cache.load_adapter("k", 0)
    assert np.array_equal(loaded["a.lora_A.weight"], arrays["a.lora_A.weight"]) and info["label_counts"] == [1, 2]
    assert cache.adapter_info("k", 1)["bytes_up"] == 11
    assert not cache.has_adapters("other", [0, 1])


def test_pool_round_trip(tmp_path):
    cache = ArtifactCache(tmp_path)
    share = ImageSplit(torch.rand(4, 3, 8, 8), torch.tensor([0, 1, 1, 2]))
    assert cache.load_pool("p") is None
    cache.save_pool("p", {3: share}, seconds=12.5)
    shares, seconds = cache.load_pool("p")
    assert seconds == 12.5 and torch.equal(shares[3].images, share.images) and torch.equal(shares[3].labels, share.labels)


def test_a_retrained_base_model_changes_adapter_and_fgl_keys(tmp_path):
    base = tmp_path / "base"
    shutil.copytree(shipped_tiny_base_dir(), base)
    settings = Settings.from_run_config({"lora.model-path": str(base)})
    adapters, fgl = adapter_key(settings, [0, 1]), base_source_key(settings, [0, 1])
    assert adapter_key(settings, [0, 1]) == adapters, "the same files give the same key"
    weights = base / "diffusion_pytorch_model.safetensors"
    blob = bytearray(weights.read_bytes())
    blob[200_000] ^= 0xFF  # same size, one weight changed within the hashed first MiB
    weights.write_bytes(bytes(blob))
    assert adapter_key(settings, [0, 1]) != adapters and base_source_key(settings, [0, 1]) != fgl
    (base / "scheduler_config.json").write_text("{}")
    assert adapter_key(settings, [0, 1]) != adapters
