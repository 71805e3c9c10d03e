"""Received adapters written in the format their library opens: diffusers' for Stable Diffusion, peft's for the tiny UNet.

A run with `keep-adapters=true` leaves each client's adapter as
`<run>/adapters/partition-<id>/pytorch_lora_weights.safetensors`:

- Stable Diffusion: `StableDiffusionPipeline.from_pretrained(base).load_lora_weights(<that folder>)`.
- tiny: the peft tensors of the UNet2DModel with `adapter_config.json` beside them (rank, alpha,
  target layers; the alpha / rank scale is already folded into the B matrices):
  `inject_adapter_in_model(LoraConfig(**config), unet)` then `set_peft_model_state_dict(unet, tensors)`
  (docs/outputs.md).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from warmfed_flwr.generative.adapter import ADAPTER_FILE
from warmfed_flwr.generative.base import Adapter

ADAPTER_CONFIG_FILE = "adapter_config.json"


def export_adapter(backbone: str, adapter: Adapter, directory: Path) -> Path:
    """Write `adapter` (of `backbone`) into `directory`; returns the safetensors file."""
    directory.mkdir(parents=True, exist_ok=True)
    if backbone == "stable-diffusion":
        from warmfed_flwr.generative.sd_utils import save_adapter_for_diffusers

        return save_adapter_for_diffusers(adapter, directory)
    if backbone == "tiny":
        from warmfed_flwr.generative.lora_targets import adapter_layers, adapter_rank

        rank = adapter_rank(adapter)
        config = {"r": rank, "lora_alpha": rank, "target_modules": adapter_layers(adapter)}
        (directory / ADAPTER_CONFIG_FILE).write_text(json.dumps(config, indent=2))
        save_file({name: torch.from_numpy(array.copy()) for name, array in adapter.items()}, str(directory / ADAPTER_FILE))
        return directory / ADAPTER_FILE
    raise ValueError(f"config key 'lora.backbone': unknown backbone {backbone!r}")
