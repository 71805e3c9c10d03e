"""How the tiny UNet learns to denoise: the loss and the training loop that pre-training and LoRA fits share.

Labels are dropped to the null class with probability `LABEL_DROPOUT`, so the model also learns
the unconditional prediction that classifier-free guidance needs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler, UNet2DModel
from diffusers.optimization import get_cosine_schedule_with_warmup

from warmfed_flwr.config import LoraSettings
from warmfed_flwr.generative.private import fit_steps, quiet_per_sample_hooks
from warmfed_flwr.generative.tiny_unet import null_class
from warmfed_flwr.logs import Progress

LABEL_DROPOUT = 0.1
LORA_WARMUP_DIVISOR = 10  # the first tenth of the LoRA steps warms the learning rate up


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
