"""Which layers of a diffusion UNet receive LoRA for the `lora.targets` setting, and the adapter
helpers every backbone shares (export with the scale folded in, rank and layers of an adapter).

- "attention": the attention projections `to_q`, `to_k`, `to_v`, `to_out.0` (the paper's choice).
- "all": every Linear, Conv2d and Embedding layer, so the class-embedding table and the
  convolutions that carry a domain's colours and textures can adapt too (a differentially private
  fit leaves the embedding out: `private.py`).
"""

from __future__ import annotations

import re
from typing import Mapping

import numpy as np
import torch
from peft import LoraConfig
from torch import nn

from warmfed_flwr.config import LoraSettings
from warmfed_flwr.generative.base import Adapter

ATTENTION_PROJECTIONS = ("to_q", "to_k", "to_v", "to_out.0")
ALL_LAYER_TYPES = (nn.Linear, nn.Conv2d, nn.Embedding)
LORA_A_KEY = re.compile(r"\.lora_(A|embedding_A)\b")
LORA_B_KEY = re.compile(r"\.lora_(B|embedding_B)\b")
LORA_PARAMETER_KEY = re.compile(r"\.lora_(?:A|B|embedding_A|embedding_B)\b")


def lora_target_modules(model: nn.Module, targets: str, private: bool = False) -> list[str]:
    """Module names (as peft `target_modules`) of the layers `targets` selects in `model`.

    `private` (a DP-SGD fit) leaves embedding tables out: Opacus has no per-sample gradients for
    peft's LoRA on them.
    """
    if targets == "attention":
        return list(ATTENTION_PROJECTIONS)
    if targets == "all":
        types = tuple(t for t in ALL_LAYER_TYPES if not (private and t is nn.Embedding))
        return [name for name, module in model.named_modules() if isinstance(module, types)]
    raise ValueError(f"config key 'lora.targets': unknown value {targets!r} (expected 'all' or 'attention')")


def lora_config(model: nn.Module, lora: LoraSettings) -> LoraConfig:
    """The peft LoraConfig for `lora` on `model`: rank, alpha and the selected target layers."""
    targets = lora_target_modules(model, lora.targets, private=lora.dp_epsilon > 0)
    return LoraConfig(r=lora.rank, lora_alpha=lora.alpha, target_modules=targets)


def fold_lora_scaling(state: Mapping[str, torch.Tensor], scale: float) -> Adapter:
    """peft LoRA tensors as float32 arrays with the `alpha / rank` scale multiplied into the B matrices.

    The generate side receives only the arrays, so adapters travel self-contained: loading them
    with alpha = rank reproduces the fitted model exactly.
    """
    return {
        name: (tensor.detach().to(torch.float32) * (scale if LORA_B_KEY.search(name) else 1.0)).numpy().copy()
        for name, tensor in state.items()
    }


def adapter_rank(adapter: Mapping[str, np.ndarray]) -> int:
    """The LoRA rank of an adapter: the leading dimension of its A matrices."""
    ranks = {array.shape[0] for name, array in adapter.items() if LORA_A_KEY.search(name)}
    if len(ranks) != 1:
        raise ValueError(f"adapter must hold LoRA A matrices of one rank, found ranks {sorted(ranks)}")
    return ranks.pop()


def adapter_layers(adapter: Mapping[str, np.ndarray]) -> list[str]:
    """Names of the layers an adapter adapts (its keys up to the LoRA parameter name)."""
    return sorted({LORA_PARAMETER_KEY.split(name)[0] for name in adapter})


def adapter_lora_config(adapter: Mapping[str, np.ndarray]) -> LoraConfig:
    """The LoraConfig that holds `adapter`'s tensors: its rank, alpha = rank (the scale is folded in), its layers."""
    rank = adapter_rank(adapter)
    return LoraConfig(r=rank, lora_alpha=rank, target_modules=adapter_layers(adapter))
