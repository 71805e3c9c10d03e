"""The one small interface between WarmFed and a diffusion backbone.

A backbone fits a LoRA adapter on a client's images, tells the server which adapter tensors it
expects, and generates class-conditioned images with or without an adapter. Adapters travel as
named float32 numpy arrays (the keys are the backbone's own LoRA parameter names).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Protocol, Sequence

import numpy as np
import torch

from warmfed_flwr.config import GenerateSettings, LoraSettings

Adapter = dict[str, np.ndarray]


@dataclass(frozen=True)
class ClassLabels:
    """Which class each image is (or is to be) of, as indices into `class_names`."""

    labels: torch.Tensor
    class_names: Sequence[str]


class Backbone(Protocol):
    """A pre-trained class-conditional diffusion model that can learn and use LoRA adapters."""

    name: str

    def adapter_shapes(self, lora: LoraSettings) -> dict[str, tuple[int, ...]]:
        """Every tensor name and shape an adapter fitted with `lora` must hold."""
        ...

    def fit_lora(
        self,
        images: torch.Tensor,
        targets: ClassLabels,
        lora: LoraSettings,
        seed: int,
        prompt_template: str,
        progress_label: str | None = None,
    ) -> Adapter:
        """Fit a LoRA adapter on `images` (N x 3 x H x W in [0, 1]) conditioned on their classes (`targets`).

        `prompt_template` is the `generate.prompt-template` the server will generate with (text-
        conditioned backbones turn class names into prompts with it). The base weights stay frozen
        and untouched; the returned arrays are float32. With `progress_label` (e.g. "partition 3")
        the fit logs its step, loss and speed a few times.
        """
        ...

    def generate(
        self,
        targets: ClassLabels,
        adapter: Mapping[str, np.ndarray] | None,
        settings: GenerateSettings,
        image_size: int,
        seed: int,
        progress_label: str | None = None,
    ) -> torch.Tensor:
        """One image per entry of `targets.labels`, as N x 3 x image_size x image_size float32 in [0, 1].

        With `adapter` None the base model generates. Deterministic for a given seed. The adapter
        is released before returning, so successive calls never stack adapters. With
        `progress_label` it logs images done, speed and time left a few times.
        """
        ...

    def base_bytes(self) -> int:
        """Bytes of the pre-trained weights a client would otherwise have to send."""
        ...

    def release(self) -> None:
        """Free the model's memory (and the CUDA cache) before another phase needs it."""
        ...
