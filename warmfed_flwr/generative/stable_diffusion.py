"""Stable Diffusion (a diffusers `StableDiffusionPipeline`) as a WarmFed backbone.

Follows diffusers' `examples/text_to_image/train_text_to_image_lora.py`: the text encoder, VAE
and UNet stay frozen, peft LoRA layers are added to the UNet with `unet.add_adapter`, kept in
fp32 and trained with AdamW on the noise-prediction loss; accelerate places the models and runs
fp16 mixed precision on CUDA. Classes are conditioned through prompts made from
`generate.prompt-template`; 10% of training prompts are dropped to "" so that classifier-free
guidance works at generation time. LoRA targets come from `lora_targets.lora_config`: the attention
projections for "attention", every Linear and Conv2d of the UNet for "all"; `lora.dp-epsilon` makes
the fit differentially private (`private.py`). Adapters are the UNet's peft LoRA tensors (names as `get_peft_model_state_dict` gives them) as
float32 arrays, with the `alpha / rank` scale folded into the B matrices as the tiny backbone
does: they load with alpha = rank, which is also what diffusers' `load_lora_weights` assumes for
a file written by `sd_utils.save_adapter_for_diffusers`. Every fit and every generation adds LoRA
layers to the one shared UNet and removes them again (`unload_lora`), so adapters never stack.
"""

from __future__ import annotations

import functools
import gc
from typing import Mapping

import numpy as np
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.utils import find_executable_batch_size
from diffusers import DDPMScheduler, StableDiffusionPipeline
from diffusers.training_utils import cast_training_params
from peft import get_peft_model_state_dict, inject_adapter_in_model, set_peft_model_state_dict

from warmfed_flwr.config import DEFAULTS, GenerateSettings, LoraSettings
from warmfed_flwr.generative.base import Adapter, ClassLabels
from warmfed_flwr.generative.lora_targets import adapter_lora_config, fold_lora_scaling, lora_config
from warmfed_flwr.generative.private import fit_steps, quiet_per_sample_hooks
from warmfed_flwr.generative.sd_utils import batch_indices, check_labels, class_prompt, initial_latents, to_model_space
from warmfed_flwr.logs import Progress, logger

DEFAULT_PROMPT_TEMPLATE = str(DEFAULTS["generate.prompt-template"])
PROMPT_DROPOUT = 0.1


class StableDiffusionBackbone:
    """A Stable Diffusion pipeline that fits UNet LoRA adapters and generates class-prompted images."""

    name = "stable-diffusion"

    def __init__(self, pipeline: StableDiffusionPipeline, prompt_dropout: float = PROMPT_DROPOUT) -> None:
        """Take over `pipeline`: freeze it and move it to the accelerator's device (fp16 on CUDA)."""
        self.accelerator = Accelerator(mixed_precision="fp16" if torch.cuda.is_available() else "no")
        self.weight_dtype = torch.float16 if self.accelerator.device.type == "cuda" else torch.float32
        self.prompt_dropout = prompt_dropout
        for model in (pipeline.unet, pipeline.vae, pipeline.text_encoder):
            model.requires_grad_(False).eval()
        pipeline.to(self.accelerator.device)
        if pipeline.dtype != self.weight_dtype:
            pipeline.to(dtype=self.weight_dtype)
        pipeline.set_progress_bar_config(disable=True)
        self.training_scheduler = DDPMScheduler.from_config(pipeline.scheduler.config)
        self._pipeline: StableDiffusionPipeline | None = pipeline

    @classmethod
    def from_model_path(cls, model_path: str) -> "StableDiffusionBackbone":
        """Load the pipeline from a Hugging Face Hub id or a local diffusers folder."""
        if not model_path:
            raise ValueError(
                "config key 'lora.model-path' is empty: the stable-diffusion backbone needs a diffusers "
                "model folder or a Hugging Face Hub id (for example a local copy of Stable Diffusion 1.5)"
            )
        try:
            pipeline = StableDiffusionPipeline.from_pretrained(
                model_path,
                dtype=torch.float16 if torch.cuda.is_available() else torch.float32,
                safety_checker=None,
                requires_safety_checker=False,
                use_safetensors=True,  # never unpickle .bin weights
            )
        except (OSError, ValueError) as error:
            raise FileNotFoundError(
                f"stable-diffusion backbone: cannot load '{model_path}' (config key 'lora.model-path'); "
                f"its weights must be on disk at that path or downloadable from the Hugging Face Hub, "
                f"as safetensors files: {error}"
            ) from error
        return cls(pipeline)

    @property
    def pipeline(self) -> StableDiffusionPipeline:
        """The live pipeline; raises RuntimeError after `release()`."""
        if self._pipeline is None:
            raise RuntimeError("the stable-diffusion backbone was released; load it again to use it")
        return self._pipeline

    @property
    def resolution(self) -> int:
        """Height and width (px) of the images the UNet works at: its latent size times the VAE's factor."""
        return int(self.pipeline.unet.config.sample_size) * int(self.pipeline.vae_scale_factor)

    def adapter_shapes(self, lora: LoraSettings) -> dict[str, tuple[int, ...]]:
        """Every tensor name and shape an adapter fitted with `lora` holds (from a meta-device UNet copy)."""
        with torch.device("meta"):
            unet = type(self.pipeline.unet).from_config(self.pipeline.unet.config)
        unet = inject_adapter_in_model(lora_config(unet, lora), unet)
        return {name: tuple(tensor.shape) for name, tensor in get_peft_model_state_dict(unet).items()}

    def fit_lora(
        self,
        images: torch.Tensor,
        targets: ClassLabels,
        lora: LoraSettings,
        seed: int,
        prompt_template: str = DEFAULT_PROMPT_TEMPLATE,
        progress_label: str | None = None,
    ) -> Adapter:
        """Fit UNet LoRA layers on `images` (N x 3 x H x W in [0, 1]) prompted with their class.

        `prompt_template` must be the `generate.prompt-template` the server will generate with.
        `lora.steps` AdamW steps of `lora.batch_size` images resized to the pipeline's resolution;
        bit-reproducible for a given seed on the CPU (CUDA's fp16 kernels vary in the last bits).
        The base weights stay untouched; returns float32 arrays, alpha / rank folded into the B matrices.
        """
        check_labels(targets.labels, targets.class_names)
        unet = self.pipeline.unet
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            unet.add_adapter(lora_config(unet, lora))
        try:
            cast_training_params(unet, dtype=torch.float32)
            progress = Progress(progress_label and f"[lora] {progress_label}", lora.steps)
            self._train_lora(images, targets, lora, seed, prompt_template, progress)
            state = {name: tensor.detach().cpu() for name, tensor in get_peft_model_state_dict(unet).items()}
            return fold_lora_scaling(state, lora.alpha / lora.rank)
        finally:
            unet.unload_lora()
            unet.eval()

    def generate(
        self,
        targets: ClassLabels,
        adapter: Mapping[str, np.ndarray] | None,
        settings: GenerateSettings,
        image_size: int,
        seed: int,
        progress_label: str | None = None,
    ) -> torch.Tensor:
        """One image per label (N x 3 x image_size x image_size float32 in [0, 1]), prompted by class.

        All initial latents are drawn from `seed` at once, so the result does not depend on the
        batch size (with a deterministic sampler such as DDIM). Batches of `settings.batch_size`;
        on a CUDA out-of-memory error the batch is halved, with a warning, and generation retried.
        The adapter is removed from the UNet before returning.
        """
        check_labels(targets.labels, targets.class_names)
        prompts = [class_prompt(settings.prompt_template, targets.class_names[int(label)]) for label in targets.labels]
        if adapter is not None:
            self._load_adapter(adapter)
        try:
            progress = Progress(progress_label and f"[warmstart-generate] {progress_label}", len(prompts), unit="image")
            images = self._generate_in_batches(prompts, settings, seed, progress)
        finally:
            if adapter is not None:
                self.pipeline.unet.unload_lora()
        if image_size != images.shape[-1]:
            images = F.interpolate(images, size=(image_size, image_size), mode="bilinear", antialias=True)
        return images.clamp(0.0, 1.0)

    def base_bytes(self) -> int:
        """Bytes of the UNet's weights as float32: what a client fine-tuning it fully would send."""
        return sum(parameter.numel() * 4 for parameter in self.pipeline.unet.parameters())

    def release(self) -> None:
        """Drop the pipeline, empty the CUDA cache and forget the process-wide cached backbone."""
        self._pipeline = None
        load_stable_diffusion_backbone.cache_clear()
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def _train_lora(
        self, images: torch.Tensor, targets: ClassLabels, lora: LoraSettings, seed: int, prompt_template: str,
        progress: Progress,
    ) -> None:
        """The AdamW loop over the UNet's trainable (LoRA) parameters, through accelerate."""
        pipeline, device = self.pipeline, self.accelerator.device
        generator = torch.Generator().manual_seed(seed)
        labels, class_names = targets.labels.long(), targets.class_names
        prompts = [class_prompt(prompt_template, name) for name in class_names] + [""]  # last row: dropped prompt
        prompt_embeddings = self._prompt_embeddings(prompts)
        pixels = to_model_space(images, self.resolution)
        unet = pipeline.unet.train()
        optimizer = torch.optim.AdamW([p for p in unet.parameters() if p.requires_grad], lr=lora.lr)
        plain = batch_indices(len(pixels), lora.batch_size, lora.steps, generator)
        with fit_steps(unet, optimizer, lora, len(pixels), plain, generator) as (unet, optimizer, batches):
            unet, optimizer = self.accelerator.prepare(unet, optimizer)
            try:
                for step, batch in enumerate(b for b in batches if len(b)):  # DP: Poisson batches may be empty
                    dropped = torch.rand(len(batch), generator=generator) < self.prompt_dropout
                    prompt_rows = torch.where(dropped, len(class_names), labels[batch])
                    loss = self._denoising_loss(unet, pixels[batch], prompt_embeddings[prompt_rows.to(device)], generator)
                    with quiet_per_sample_hooks():
                        self.accelerator.backward(loss)
                    optimizer.step()
                    progress.update(step + 1, loss=loss.detach())
                    optimizer.zero_grad(set_to_none=True)
            finally:
                self.accelerator.unwrap_model(unet, keep_fp32_wrapper=False)
                self.accelerator.free_memory()

    def _denoising_loss(
        self, unet: torch.nn.Module, pixels: torch.Tensor, prompt_embeddings: torch.Tensor, generator: torch.Generator
    ) -> torch.Tensor:
        """Noise-prediction MSE (or v-prediction, as the scheduler says) on VAE latents of `pixels`."""
        vae, device = self.pipeline.vae, self.accelerator.device
        with torch.no_grad():
            posterior = vae.encode(pixels.to(device, self.weight_dtype)).latent_dist
            latents = posterior.sample(generator) * vae.config.scaling_factor
        noise = torch.randn(latents.shape, generator=generator).to(device, latents.dtype)
        timesteps = torch.randint(
            0, self.training_scheduler.config.num_train_timesteps, (len(latents),), generator=generator
        ).to(device)
        noisy = self.training_scheduler.add_noise(latents, noise, timesteps)
        if self.training_scheduler.config.prediction_type == "v_prediction":
            target = self.training_scheduler.get_velocity(latents, noise, timesteps)
        else:
            target = noise
        prediction = unet(noisy, timesteps, encoder_hidden_states=prompt_embeddings).sample
        return F.mse_loss(prediction.float(), target.float())

    def _prompt_embeddings(self, prompts: list[str]) -> torch.Tensor:
        """Text-encoder hidden states of `prompts` (one row each), as the pipeline computes them."""
        with torch.no_grad():
            embeddings, _ = self.pipeline.encode_prompt(
                prompts, self.accelerator.device, num_images_per_prompt=1, do_classifier_free_guidance=False
            )
        return embeddings

    def _load_adapter(self, adapter: Mapping[str, np.ndarray]) -> None:
        """Add LoRA layers shaped like `adapter` to the UNet (alpha = rank) and load its tensors."""
        unet = self.pipeline.unet
        unet.add_adapter(adapter_lora_config(adapter))
        state = {name: torch.from_numpy(np.asarray(array, dtype=np.float32)) for name, array in adapter.items()}
        result = set_peft_model_state_dict(unet, state)
        missing = sorted(key for key in result.missing_keys if ".lora_" in key)
        if result.unexpected_keys or missing:
            unet.unload_lora()
            unexpected = sorted(result.unexpected_keys)
            problem = f"unexpected tensors {unexpected[:3]}" if unexpected else f"missing tensors {missing[:3]}"
            raise ValueError(f"adapter does not fit the stable-diffusion UNet: {problem}")

    def _generate_in_batches(
        self, prompts: list[str], settings: GenerateSettings, seed: int, progress: Progress
    ) -> torch.Tensor:
        """Run the pipeline over `prompts` in batches, halving the batch on out-of-memory errors."""
        pipeline, resolution = self.pipeline, self.resolution
        generator = torch.Generator().manual_seed(seed)
        latents = initial_latents(pipeline, len(prompts), generator).to(self.accelerator.device, self.weight_dtype)
        current = {"batch_size": settings.batch_size}

        def halve_batch() -> int:
            if current["batch_size"] == 1:
                raise torch.OutOfMemoryError("out of memory generating even one image at a time")
            current["batch_size"] //= 2
            logger.warning(
                "out of memory generating %d images at once; retrying with batches of %d",
                current["batch_size"] * 2,
                current["batch_size"],
            )
            return current["batch_size"]

        def run(batch_size: int) -> torch.Tensor:
            outputs = []
            for start in range(0, len(prompts), batch_size):
                output = pipeline(
                    prompts[start : start + batch_size],
                    height=resolution,
                    width=resolution,
                    num_inference_steps=settings.steps,
                    guidance_scale=settings.guidance,
                    latents=latents[start : start + batch_size],
                    generator=generator,
                    output_type="pt",
                )
                outputs.append(output.images.float().cpu())
                progress.update(start + len(outputs[-1]))
            return torch.cat(outputs)

        # called directly: up to accelerate 1.14 the decorator form drops reduce_batch_size_fn
        return find_executable_batch_size(run, starting_batch_size=settings.batch_size, reduce_batch_size_fn=halve_batch)()


@functools.lru_cache(maxsize=1)
def load_stable_diffusion_backbone(model_path: str) -> StableDiffusionBackbone:
    """The backbone of `model_path` (config key 'lora.model-path'), loaded once per process.

    One Stable Diffusion model is kept at a time; `release()` forgets it.
    """
    return StableDiffusionBackbone.from_model_path(model_path)
