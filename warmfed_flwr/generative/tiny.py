"""The shipped tiny class-conditional diffusion UNet (`tiny_unet.py`) as a WarmFed backbone.

Sampling uses DDIM with "trailing" spacing (the first step sees pure noise, so the model, not the
noise, sets each image's mean brightness: a domain with white backgrounds stays white) and
classifier-free guidance.

LoRA goes through peft. The base model is never modified: each fit and each generation with an
adapter works on a fresh copy of the base with the adapter injected, which is dropped afterwards,
so adapters can neither stack nor accumulate in memory.
"""

from __future__ import annotations

import copy
import functools
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler, DDPMScheduler, UNet2DModel
from peft import get_peft_model_state_dict, inject_adapter_in_model, set_peft_model_state_dict
from peft.tuners.tuners_utils import BaseTunerLayer

from warmfed_flwr.config import GenerateSettings, LoraSettings
from warmfed_flwr.generative.assets import shipped_tiny_base_dir
from warmfed_flwr.generative.base import Adapter, ClassLabels
from warmfed_flwr.generative.lora_targets import adapter_lora_config, fold_lora_scaling, lora_config
from warmfed_flwr.generative.tiny_training import train_denoiser
from warmfed_flwr.generative.tiny_unet import SCHEDULER_CONFIG, null_class, to_model_space, training_scheduler
from warmfed_flwr.logs import Progress


class TinyBackbone:
    """The tiny pre-trained UNet: fits LoRA adapters and generates class-conditioned images."""

    name = "tiny"

    def __init__(self, unet: UNet2DModel, scheduler: DDPMScheduler | None = None) -> None:
        self.unet = unet.eval().requires_grad_(False)
        self.num_classes = null_class(unet)
        self.null_label = self.num_classes
        self.sample_size = int(unet.config.sample_size)
        self.scheduler = scheduler if scheduler is not None else training_scheduler()

    def adapter_shapes(self, lora: LoraSettings) -> dict[str, tuple[int, ...]]:
        """Every tensor name and shape an adapter fitted with `lora` holds."""
        model = self._copy_with_lora(lora)
        return {name: tuple(tensor.shape) for name, tensor in get_peft_model_state_dict(model).items()}

    def fit_lora(
        self,
        images: torch.Tensor,
        targets: ClassLabels,
        lora: LoraSettings,
        seed: int,
        prompt_template: str = "",
        progress_label: str | None = None,
    ) -> Adapter:
        """Fit a LoRA adapter on `images` (N x 3 x H x W in [0, 1]) conditioned on `labels`.

        Trains only the LoRA parameters of a copy of the base for `lora.steps` AdamW steps of
        `lora.batch_size` images (learning rate warmed up, then cosine-decayed from `lora.lr`);
        deterministic for a given seed. Returns float32 arrays. `prompt_template` is not used:
        this model is conditioned on class labels, not text. With `progress_label` the fit logs
        its progress a few times.
        """
        labels = targets.labels
        self._check_labels(labels, targets.class_names)
        clean = to_model_space(images, self.sample_size)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = self._copy_with_lora(lora)
            progress = Progress(progress_label and f"[lora] {progress_label}", lora.steps)
            train_denoiser(model, self.scheduler, clean, labels.long(), lora, progress)
        return fold_lora_scaling(get_peft_model_state_dict(model), lora.alpha / lora.rank)

    @torch.inference_mode()
    def generate(
        self,
        targets: ClassLabels,
        adapter: Mapping[str, np.ndarray] | None,
        settings: GenerateSettings,
        image_size: int,
        seed: int,
        progress_label: str | None = None,
    ) -> torch.Tensor:
        """One image per label (N x 3 x image_size x image_size float32 in [0, 1]).

        DDIM with `settings.steps` steps and classifier-free guidance `settings.guidance`, in
        batches of `settings.batch_size`. The initial noise of all images is drawn from `seed` at
        once, so outputs do not depend on the batch size. With an adapter, a merged copy of the
        base generates and is dropped before returning.
        """
        labels = targets.labels
        self._check_labels(labels, targets.class_names)
        model = self.unet if adapter is None else self.with_adapter(adapter)
        sampler = DDIMScheduler.from_config(self.scheduler.config)
        sampler.set_timesteps(settings.steps)
        generator = torch.Generator().manual_seed(seed)
        noise = torch.randn((len(labels), 3, self.sample_size, self.sample_size), generator=generator)
        progress = Progress(progress_label and f"[warmstart-generate] {progress_label}", len(labels), unit="image")
        batches = []
        for batch in torch.arange(len(labels)).split(settings.batch_size):
            batches.append(self._denoise(model, sampler, noise[batch], labels[batch].long(), settings.guidance))
            progress.update(int(batch[-1]) + 1)
        samples = torch.cat(batches)
        images = (samples.clamp(-1.0, 1.0) + 1.0) / 2.0
        if image_size != self.sample_size:
            images = F.interpolate(images, size=(image_size, image_size), mode="bilinear", antialias=True)
        return images.clamp(0.0, 1.0)

    def base_bytes(self) -> int:
        """Bytes of the pre-trained weights (as held in memory) a client would otherwise send."""
        return sum(parameter.numel() * parameter.element_size() for parameter in self.unet.parameters())

    def release(self) -> None:
        """Drop the process-wide cached copy; the model is freed once callers drop theirs."""
        _cached_tiny_backbone.cache_clear()

    def _check_labels(self, labels: torch.Tensor, class_names: Sequence[str]) -> None:
        """Raise ValueError unless the classes fit the model's embedding table."""
        if len(class_names) > self.num_classes:
            raise ValueError(f"the tiny backbone knows {self.num_classes} classes, got {len(class_names)} class names")
        if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= len(class_names)):
            raise ValueError(f"labels must lie in [0, {len(class_names)}), got [{int(labels.min())}, {int(labels.max())}]")

    def _copy_with_lora(self, lora: LoraSettings) -> UNet2DModel:
        """A copy of the base with freshly initialised, trainable fp32 LoRA layers (base frozen)."""
        model = copy.deepcopy(self.unet)
        return inject_adapter_in_model(lora_config(model, lora), model)

    def with_adapter(self, adapter: Mapping[str, np.ndarray]) -> UNet2DModel:
        """A copy of the base with `adapter` loaded and merged into its weights, for fast sampling."""
        model = copy.deepcopy(self.unet)
        model = inject_adapter_in_model(adapter_lora_config(adapter), model)
        state = {name: torch.from_numpy(np.asarray(array, dtype=np.float32)) for name, array in adapter.items()}
        result = set_peft_model_state_dict(model, state)
        if result.unexpected_keys:
            raise ValueError(f"adapter tensors not used by the tiny backbone: {sorted(result.unexpected_keys)[:3]}")
        for module in model.modules():
            if isinstance(module, BaseTunerLayer):
                module.merge()
        return model

    def _denoise(
        self, model: UNet2DModel, sampler: DDIMScheduler, noise: torch.Tensor, labels: torch.Tensor, guidance: float
    ) -> torch.Tensor:
        """Run the DDIM chain from `noise` for one batch, with classifier-free guidance."""
        sample = noise
        null_labels = torch.full_like(labels, self.null_label)
        for timestep in sampler.timesteps:
            if guidance == 1.0:
                prediction = model(sample, timestep, class_labels=labels).sample
            else:
                both = model(torch.cat([sample, sample]), timestep, class_labels=torch.cat([labels, null_labels])).sample
                conditional, unconditional = both.chunk(2)
                prediction = unconditional + guidance * (conditional - unconditional)
            sample = sampler.step(prediction, timestep, sample).prev_sample
        return sample


def load_tiny_backbone(path: str = "") -> TinyBackbone:
    """The tiny backbone from `path` (a folder with config.json, scheduler_config.json and safetensors weights).

    Defaults to the asset shipped with the package. Cached per process and resolved folder.
    """
    folder = Path(path) if path else shipped_tiny_base_dir()
    for required in ("config.json", SCHEDULER_CONFIG):
        if not (folder / required).is_file():
            raise FileNotFoundError(f"tiny backbone: no {required} in {folder} (config key 'lora.model-path')")
    try:
        return _cached_tiny_backbone(folder.resolve())
    except OSError as error:  # diffusers: no safetensors weights (a pickled .bin is never read)
        raise FileNotFoundError(
            f"tiny backbone: no safetensors weights in {folder} (config key 'lora.model-path'); "
            f"only safetensors files are loaded, never pickled .bin files: {error}"
        ) from error


@functools.lru_cache(maxsize=4)
def _cached_tiny_backbone(folder: Path) -> TinyBackbone:
    """Load the UNet in `folder` once per process."""
    return TinyBackbone(
        UNet2DModel.from_pretrained(str(folder), local_files_only=True, use_safetensors=True, dtype=torch.float32),
        DDPMScheduler.from_pretrained(str(folder), local_files_only=True),
    )
