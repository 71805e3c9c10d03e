"""How much of a GPU each simulated client gets, from the GPUs this machine shows and the run's backbone.

Read with `nvidia-smi` (honouring CUDA_VISIBLE_DEVICES), not torch, so that the launcher stays a
small process. The share follows from the GPU memory one client needs: Stable Diffusion's LoRA fit
peaks at 6.1 GiB at the presets' settings (measured on an H100, BENCHMARKS.md), counted as 8 GiB
with headroom; the tiny backbone and the classifiers need little beyond the CUDA context. At most
four clients share a GPU, which also leaves room for the ServerApp's own phases on the first one.
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
from dataclasses import dataclass

CLIENT_GPU_GIB = {"stable-diffusion": 8.0, "tiny": 1.0}
MAX_CLIENTS_PER_GPU = 4
QUERY = ["nvidia-smi", "--query-gpu=index,uuid,name,memory.total", "--format=csv,noheader,nounits"]


@dataclass(frozen=True)
class Gpu:
    """One visible GPU."""

    index: int
    uuid: str
    name: str
    memory_gib: float


def listed_gpus() -> list[Gpu]:
    """Every GPU `nvidia-smi` lists on this machine, whatever CUDA_VISIBLE_DEVICES says (none without nvidia-smi)."""
    if shutil.which(QUERY[0]) is None:
        return []
    listing = subprocess.run(QUERY, capture_output=True, text=True)
    if listing.returncode != 0:
        return []
    gpus = []
    for line in listing.stdout.strip().splitlines():
        index, uuid, name, memory_mib = (field.strip() for field in line.split(","))
        gpus.append(Gpu(int(index), uuid, name, float(memory_mib) / 1024))
    return gpus


def visible_gpus() -> list[Gpu]:
    """The GPUs `nvidia-smi` lists, restricted to CUDA_VISIBLE_DEVICES (indices or UUIDs) when it is set."""
    gpus = listed_gpus()
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        wanted = {part.strip() for part in visible.split(",") if part.strip()}
        gpus = [gpu for gpu in gpus if str(gpu.index) in wanted or gpu.uuid in wanted]
    return gpus


def client_gpu_share(backbone: str, gpus: list[Gpu]) -> float:
    """The GPU fraction per simulated client: 0 without GPUs, else 1 / clients that fit on the smallest GPU (1-4)."""
    if not gpus:
        return 0.0
    fitting = math.floor(min(gpu.memory_gib for gpu in gpus) / CLIENT_GPU_GIB[backbone])
    return 1.0 / min(MAX_CLIENTS_PER_GPU, max(1, fitting))


def describe(gpus: list[Gpu]) -> str:
    """e.g. '1 GPU (NVIDIA H100 80GB HBM3, 79.6 GiB)'."""
    if not gpus:
        return "no GPU"
    kinds = ", ".join(sorted({f"{gpu.name}, {gpu.memory_gib:.1f} GiB" for gpu in gpus}))
    return f"{len(gpus)} GPU{'s' if len(gpus) > 1 else ''} ({kinds})"
