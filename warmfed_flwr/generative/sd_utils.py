"""Small, documented helpers of the Stable Diffusion backbone (in the manner of diffusers' `training_utils.py`):
class prompts, initial latents, the images' model space, batches of a LoRA fit, and writing an adapter
where diffusers' `load_lora_weights` finds it."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import StableDiffusionPipeline

from warmfed_flwr.generative.adapter import ADAPTER_FILE


def class_prompt(template: str, class_name: str) -> str:
    """The prompt for one class: `template` with `{class}` replaced by the name, underscores as spaces."""
    return template.format(**{"class": class_name.replace("_", " ")})


def initial_latents(pipeline: StableDiffusionPipeline, count: int, generator: torch.Generator) -> torch.Tensor:
    """`count` initial latents at the pipeline's resolution, drawn at once in float32 on the CPU.

    Drawing them in one precision on one device keeps generation independent of batch size,
    device and dtype; pass them to the pipeline as `latents` to reproduce `generate`.
    """
    latent_size = int(pipeline.unet.config.sample_size)
    shape = (count, int(pipeline.unet.config.in_channels), latent_size, latent_size)
    return torch.randn(shape, generator=generator)


def check_labels(labels: torch.Tensor, class_names: Sequence[str]) -> None:
    """Raise ValueError unless every label indexes `class_names`."""
    if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= len(class_names)):
        raise ValueError(f"labels must lie in [0, {len(class_names)}), got [{int(labels.min())}, {int(labels.max())}]")


def to_model_space(images: torch.Tensor, resolution: int) -> torch.Tensor:
    """[0, 1] images (N x 3 x H x W) resized to `resolution` and mapped to [-1, 1], as the VAE expects."""
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be N x 3 x H x W, got shape {tuple(images.shape)}")
    images = images.float()
    if images.shape[-2:] != (resolution, resolution):
        images = F.interpolate(images, size=(resolution, resolution), mode="bilinear", antialias=True)
    return images * 2.0 - 1.0


def batch_indices(count: int, batch_size: int, steps: int, generator: torch.Generator) -> list[torch.Tensor]:
    """`steps` batches of indices into `count` items: shuffled epochs, cut into `batch_size` slices."""
    batch_size = min(batch_size, count)
    epochs = math.ceil(steps * batch_size / count)
    order = torch.cat([torch.randperm(count, generator=generator) for _ in range(epochs)])
    return [order[step * batch_size : (step + 1) * batch_size] for step in range(steps)]


def save_adapter_for_diffusers(adapter: Mapping[str, np.ndarray], directory: str | Path) -> Path:
    """Write `adapter` with `save_lora_weights` so that `pipeline.load_lora_weights(directory)` loads it.

    The keys stay in peft's format (prefixed "unet."), which diffusers' loader reads natively.
    `convert_state_dict_to_diffusers` would rename only the attention projections, and the loader
    decides the format from the first key alone, so adapters that also cover other layers ("all")
    would lose their attention tensors. Returns the path of the written safetensors file.
    """
    state = {name: torch.from_numpy(np.asarray(array, dtype=np.float32)) for name, array in adapter.items()}
    StableDiffusionPipeline.save_lora_weights(str(directory), unet_lora_layers=state, weight_name=ADAPTER_FILE)
    return Path(directory) / ADAPTER_FILE
