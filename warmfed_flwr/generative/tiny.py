"""The shipped tiny class-conditional diffusion UNet as a WarmFed backbone.

A diffusers `UNet2DModel` at 16 px with a class-embedding table of `num_classes + 1` rows: the
last row is the null class used for classifier-free guidance (labels are dropped to it with
probability `LABEL_DROPOUT` while training). Training uses a cosine DDPM schedule rescaled to zero
terminal SNR with v-prediction; sampling uses DDIM with "trailing" spacing (the first step sees pure
noise, so the model, not the noise, sets each image's mean brightness: a domain with white
backgrounds stays white) and classifier-free guidance. The schedule travels with the weights as
`scheduler_config.json`.

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
from diffusers.optimization import get_cosine_schedule_with_warmup
from peft import get_peft_model_state_dict, inject_adapter_in_model, set_peft_model_state_dict
from peft.tuners.tuners_utils import BaseTunerLayer

from warmfed_flwr.config import GenerateSettings, LoraSettings
from warmfed_flwr.generative.assets import shipped_tiny_base_dir
from warmfed_flwr.generative.base import Adapter, ClassLabels
from warmfed_flwr.generative.lora_targets import adapter_lora_config, fold_lora_scaling, lora_config
from warmfed_flwr.generative.private import fit_steps, quiet_per_sample_hooks
from warmfed_flwr.logs import Progress

TINY_ASSET_DIR = Path(__file__).resolve().parent.parent / "assets" / "tiny-unet"
LABEL_DROPOUT = 0.1
LORA_WARMUP_DIVISOR = 10  # the first tenth of the LoRA steps warms the learning rate up
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


def denoising_loss(
    unet: UNet2DModel, scheduler: DDPMScheduler, clean: torch.Tensor, labels: torch.Tensor, null_label: int
) -> torch.Tensor:
    """Denoising MSE on randomly noised `clean` images, labels dropped to the null class.

    The target is the noise or the velocity, as the scheduler's `prediction_type` says.

    Draws from torch's global generator; callers seed it (or fork it) for determinism.
    """
    noise = torch.randn_like(clean)
    timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (clean.shape[0],))
    dropped = torch.rand(clean.shape[0]) < LABEL_DROPOUT
    class_labels = torch.where(dropped, torch.full_like(labels, null_label), labels)
    noisy = scheduler.add_noise(clean, noise, timesteps)
    prediction = unet(noisy, timesteps, class_labels=class_labels).sample
    return F.mse_loss(prediction, denoising_target(scheduler, clean, noise, timesteps))


def denoising_target(scheduler: DDPMScheduler, clean: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
    """What the UNet learns to predict from the noised images: the noise or the velocity (`prediction_type`)."""
    if scheduler.config.prediction_type == "v_prediction":
        return scheduler.get_velocity(clean, noise, timesteps)
    return noise


def train_denoiser(
    model: UNet2DModel,
    scheduler: DDPMScheduler,
    clean: torch.Tensor,
    labels: torch.Tensor,
    lora: LoraSettings,
    progress: Progress | None = None,
) -> None:
    """Train `model`'s trainable parameters on `clean` images (model space) as a LoRA fit does.

    Labels are dropped to the model's null class (its last class embedding) as in `denoising_loss`.

    `lora.steps` AdamW steps of `lora.batch_size` random images, the learning rate warmed up over
    the first tenth of the steps, then cosine-decayed from `lora.lr`; with `lora.dp-epsilon` > 0
    by DP-SGD (`private.py`: Poisson-sampled batches, clipped and noised per-image gradients). Draws
    from torch's global generator; callers seed it (or fork it) for determinism.
    """
    null_label = null_class(model)
    model.train()
    trainable = [parameter for parameter in model.parameters() if parameter.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=lora.lr)
    learning_rate = get_cosine_schedule_with_warmup(optimizer, lora.steps // LORA_WARMUP_DIVISOR, lora.steps)
    count = clean.shape[0]
    random_batches = (torch.randint(0, count, (lora.batch_size,)) for _ in range(lora.steps))
    with fit_steps(model, optimizer, lora, count, random_batches) as (step_model, step_optimizer, batches):
        for step, batch in enumerate(batches):
            if len(batch):  # a Poisson batch may be empty: the step still counts in the privacy budget
                loss = denoising_loss(step_model, scheduler, clean[batch], labels[batch], null_label)
                step_optimizer.zero_grad(set_to_none=True)
                with quiet_per_sample_hooks():
                    loss.backward()
                step_optimizer.step()
                if progress is not None:
                    progress.update(step + 1, loss=loss.detach())
            learning_rate.step()


def null_class(unet: UNet2DModel) -> int:
    """The class label that stands for "no class" (classifier-free guidance): the last class embedding."""
    return int(unet.config.num_class_embeds) - 1


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
