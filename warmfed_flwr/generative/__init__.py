"""The diffusion side of WarmFed: backbones that fit and use LoRA adapters, and adapter checks.

Importing the package stays light (no diffusers); a backbone's module is imported by
`load_backbone` the first time it is needed.
"""

from __future__ import annotations

from warmfed_flwr.config import LoraSettings
from warmfed_flwr.generative.adapter import (
    AdapterError,
    adapter_config,
    validate_adapter,
)
from warmfed_flwr.generative.base import Adapter, Backbone, ClassLabels

__all__ = [
    "Adapter",
    "AdapterError",
    "Backbone",
    "ClassLabels",
    "adapter_config",
    "load_backbone",
    "validate_adapter",
]


def load_backbone(lora: LoraSettings) -> Backbone:
    """The (per-process cached) backbone named by `lora.backbone`, from `lora.model_path` if set."""
    if lora.backbone == "tiny":
        from warmfed_flwr.generative.tiny import load_tiny_backbone

        return load_tiny_backbone(lora.model_path)
    if lora.backbone == "stable-diffusion":
        from warmfed_flwr.generative.stable_diffusion import load_stable_diffusion_backbone

        return load_stable_diffusion_backbone(lora.model_path)
    raise ValueError(f"config key 'lora.backbone': unknown backbone {lora.backbone!r} (expected 'tiny' or 'stable-diffusion')")
