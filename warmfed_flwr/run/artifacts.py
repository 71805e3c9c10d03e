"""Reusable WarmFed artifacts: client adapters, synthetic pools and global models, stored as safetensors.

With `cache-dir` set, work that is identical across runs (the same clients' adapters for the same
data, LoRA settings, base model and seed; the same synthetic pool for the same adapters and
generation settings) is computed once. The cache key is a hash of every setting that produces the
artifact, so a changed setting never reuses a stale file. A reused phase is recorded in
results.json with the seconds and bytes it cost when it was computed, marked `cached`.
The same store under a run directory holds that run's checkpoints (see `checkpoint.py`).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from safetensors.numpy import load_file, save_file
from safetensors import safe_open

from warmfed_flwr.config import Settings
from warmfed_flwr.data.types import ImageSplit
from warmfed_flwr.generative.fingerprint import base_model_fingerprint


def cache_key(*parts: Any) -> str:
    """A short, stable hash of settings (dataclasses, dicts, scalars)."""

    def plain(value: Any) -> Any:
        return asdict(value) if is_dataclass(value) else value

    blob = json.dumps([plain(p) for p in parts], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def adapter_key(settings: Settings, partition_ids: list[int]) -> str:
    """Everything that determines the clients' adapters (label-count sharing does not change them), base model included."""
    lora = {k: v for k, v in asdict(settings.lora).items() if k != "send_label_counts"}
    return cache_key("adapters", settings.data, lora, settings.seed, sorted(partition_ids),
                     base_model_fingerprint(settings.lora))


def base_source_key(settings: Settings, partition_ids: list[int]) -> str:
    """The source of an FGL pool: the base model alone (no adapters) for these clients."""
    return cache_key("base", settings.lora.backbone, settings.lora.model_path, sorted(partition_ids),
                     base_model_fingerprint(settings.lora))


def pool_key(settings: Settings, source_key: str) -> str:
    """Everything that determines the synthetic pool generated from `source_key`'s adapters (or the base)."""
    return cache_key("pool", source_key, settings.generate, settings.data.image_size, settings.lora.send_label_counts,
                     settings.seed)


def save_arrays_atomic(path: Path, arrays: Mapping[str, np.ndarray], metadata: Mapping[str, str]) -> None:
    """safetensors file written to a temporary name and renamed, so a reader never sees half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file({k: np.ascontiguousarray(v) for k, v in arrays.items()}, str(tmp), metadata=dict(metadata))
    os.replace(tmp, path)


def load_arrays(path: Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Arrays and metadata of a safetensors file."""
    with safe_open(str(path), framework="numpy") as f:
        metadata = dict(f.metadata() or {})
    return load_file(str(path)), metadata


class ArtifactCache:
    """Adapters and pools under one folder, keyed by `adapter_key` / `pool_key`."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def adapter_path(self, key: str, partition_id: int) -> Path:
        return self.root / f"adapters-{key}" / f"partition-{partition_id}.safetensors"

    def save_adapter(self, key: str, partition_id: int, arrays: Mapping[str, np.ndarray], info: Mapping[str, Any]) -> None:
        """One client's adapter with what it cost (label counts, seconds, bytes) as JSON metadata."""
        save_arrays_atomic(self.adapter_path(key, partition_id), arrays, {"info": json.dumps(dict(info))})

    def has_adapters(self, key: str, partition_ids: list[int]) -> bool:
        """True when every one of these clients' adapters is stored under `key`."""
        return all(self.adapter_path(key, pid).exists() for pid in partition_ids)

    def load_adapter(self, key: str, partition_id: int) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """One client's stored adapter and its info."""
        arrays, metadata = load_arrays(self.adapter_path(key, partition_id))
        return arrays, json.loads(metadata["info"])

    def adapter_info(self, key: str, partition_id: int) -> dict[str, Any]:
        """One client's stored adapter's info, read without its arrays."""
        with safe_open(str(self.adapter_path(key, partition_id)), framework="numpy") as f:
            return json.loads((f.metadata() or {})["info"])

    def pool_path(self, key: str) -> Path:
        return self.root / f"pool-{key}.safetensors"

    def save_pool(self, key: str, shares: Mapping[int, ImageSplit], seconds: float) -> None:
        """Each client's share of the synthetic pool and the seconds generation took."""
        arrays: dict[str, np.ndarray] = {}
        for pid, split in shares.items():
            arrays[f"images-{pid}"] = split.images.numpy()
            arrays[f"labels-{pid}"] = split.labels.numpy()
        save_arrays_atomic(self.pool_path(key), arrays, {"seconds": str(seconds)})

    def load_pool(self, key: str) -> tuple[dict[int, ImageSplit], float] | None:
        """The cached shares by partition id and their generation seconds, or None."""
        path = self.pool_path(key)
        if not path.exists():
            return None
        arrays, metadata = load_arrays(path)
        pids = sorted(int(name.split("-", 1)[1]) for name in arrays if name.startswith("images-"))
        shares = {
            pid: ImageSplit(torch.from_numpy(arrays[f"images-{pid}"]), torch.from_numpy(arrays[f"labels-{pid}"]))
            for pid in pids
        }
        return shares, float(metadata["seconds"])

    def model_path(self, name: str) -> Path:
        return self.root / f"model-{name}.safetensors"

    def save_model(self, name: str, arrays: Mapping[str, np.ndarray]) -> None:
        """A model's named arrays (a state dict), their order kept in the metadata."""
        save_arrays_atomic(self.model_path(name), arrays, {"order": json.dumps(list(arrays))})

    def load_model(self, name: str) -> dict[str, np.ndarray]:
        """The named arrays saved by `save_model`, in their original order."""
        arrays, metadata = load_arrays(self.model_path(name))
        return {key: arrays[key] for key in json.loads(metadata["order"])}

    def delete_adapters(self) -> int:
        """Delete every stored adapter; returns how many adapter files there were."""
        deleted = 0
        for folder in sorted(self.root.glob("adapters-*")):
            deleted += sum(1 for _ in folder.glob("*.safetensors"))
            shutil.rmtree(folder)
        return deleted
