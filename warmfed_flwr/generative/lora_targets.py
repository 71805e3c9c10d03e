"""Which layers of a diffusion UNet receive LoRA for the `lora.targets` setting.

- "attention": the attention projections `to_q`, `to_k`, `to_v`, `to_out.0` (the paper's choice).
- "all": every Linear, Conv2d and Embedding layer, so the class-embedding table and the
  convolutions that carry a domain's colours and textures can adapt too.
"""

from __future__ import annotations

from peft import LoraConfig
from torch import nn

from warmfed_flwr.config import LoraSettings

ATTENTION_PROJECTIONS = ("to_q", "to_k", "to_v", "to_out.0")
ALL_LAYER_TYPES = (nn.Linear, nn.Conv2d, nn.Embedding)


def lora_target_modules(model: nn.Module, targets: str) -> list[str]:
    """Module names (as peft `target_modules`) of the layers `targets` selects in `model`."""
    if targets == "attention":
        return list(ATTENTION_PROJECTIONS)
    if targets == "all":
        return [name for name, module in model.named_modules() if isinstance(module, ALL_LAYER_TYPES)]
    raise ValueError(f"config key 'lora.targets': unknown value {targets!r} (expected 'all' or 'attention')")


def lora_config(model: nn.Module, lora: LoraSettings) -> LoraConfig:
    """The peft LoraConfig for `lora` on `model`: rank, alpha and the selected target layers."""
    return LoraConfig(r=lora.rank, lora_alpha=lora.alpha, target_modules=lora_target_modules(model, lora.targets))
