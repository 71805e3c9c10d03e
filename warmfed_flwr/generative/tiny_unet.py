"""The tiny class-conditional diffusion UNet: its architecture, noise schedule, pixel space and null class.

A diffusers `UNet2DModel` at 16 px with a class-embedding table of `num_classes + 1` rows: the
last row is the null class used for classifier-free guidance. Training uses a cosine DDPM schedule
rescaled to zero terminal SNR with v-prediction. The schedule travels with the weights as
`scheduler_config.json`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler, UNet2DModel

TRAIN_TIMESTEPS = 1000
SCHEDULER_CONFIG = "scheduler_config.json"


def tiny_unet_config(
    num_classes: int = 10, sample_size: int = 16, block_out_channels: tuple[int, ...] = (32, 64, 96)
) -> dict[str, object]:
    """The UNet2DModel config of the tiny backbone: attention in every block below the first."""
    depth = len(block_out_channels)
    return {
        "sample_size": sample_size,
        "in_channels": 3,
        "out_channels": 3,
        "block_out_channels": tuple(block_out_channels),
        "layers_per_block": 1,
        "down_block_types": ("DownBlock2D",) + ("AttnDownBlock2D",) * (depth - 1),
        "up_block_types": ("AttnUpBlock2D",) * (depth - 1) + ("UpBlock2D",),
        "num_class_embeds": num_classes + 1,
        "norm_num_groups": 8,
        "attention_head_dim": 8,
    }


def training_scheduler() -> DDPMScheduler:
    """The noise schedule for pre-training a tiny base: cosine betas at zero terminal SNR, v-prediction."""
    return DDPMScheduler(
        num_train_timesteps=TRAIN_TIMESTEPS,
        beta_schedule="squaredcos_cap_v2",
        prediction_type="v_prediction",
        rescale_betas_zero_snr=True,
        timestep_spacing="trailing",
    )


def to_model_space(images: torch.Tensor, sample_size: int) -> torch.Tensor:
    """[0, 1] images (N x 3 x H x W) resized to the UNet's size and mapped to [-1, 1]."""
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be N x 3 x H x W, got shape {tuple(images.shape)}")
    images = images.float()
    if images.shape[-1] != sample_size or images.shape[-2] != sample_size:
        images = F.interpolate(images, size=(sample_size, sample_size), mode="bilinear", antialias=True)
    return images * 2.0 - 1.0


def null_class(unet: UNet2DModel) -> int:
    """The class label that stands for "no class" (classifier-free guidance): the last class embedding."""
    return int(unet.config.num_class_embeds) - 1
