"""A fingerprint of the base diffusion model, so cached adapters and pools never outlive a changed base."""

from __future__ import annotations

import hashlib
from pathlib import Path

from warmfed_flwr.config import LoraSettings
from warmfed_flwr.generative.assets import shipped_tiny_base_dir

HEAD_BYTES = 1 << 20  # the first MiB of each file: safetensors headers and leading tensors


def base_model_fingerprint(lora: LoraSettings) -> str:
    """A hash of the base model's files (names, sizes, first MiB), or the hub id when it is not a local folder.

    Retraining or replacing the weights changes it; reading the first MiB keeps it cheap even for
    multi-GB Stable Diffusion folders.
    """
    folder = Path(lora.model_path).expanduser() if lora.model_path else None
    if lora.backbone == "tiny" and folder is None:
        folder = shipped_tiny_base_dir()
    if folder is None or not folder.is_dir():
        return f"id:{lora.backbone}:{lora.model_path}"
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(f"{path.relative_to(folder).as_posix()}:{path.stat().st_size}\n".encode())
        with path.open("rb") as handle:
            digest.update(handle.read(HEAD_BYTES))
    return digest.hexdigest()[:20]
