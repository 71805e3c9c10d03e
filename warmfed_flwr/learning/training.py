"""Supervised train and evaluate loops shared by every phase and baseline."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn
from torch.nn import functional as F

from warmfed_flwr.config import TrainSettings
from warmfed_flwr.data.types import ImageSplit, float_pixels
from warmfed_flwr.logs import Progress

# A batch loss: (model, images, labels) -> scalar loss tensor.
BatchLoss = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]


def pick_device() -> torch.device:
    """CUDA when present, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def cross_entropy_loss(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Plain cross-entropy of the model's logits."""
    return F.cross_entropy(model(images), labels)


def random_shift(images: torch.Tensor, max_shift: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Each image moved by up to `max_shift` pixels in x and y (edge pixels repeated)."""
    size_y, size_x = images.shape[-2:]
    padded = F.pad(images, (max_shift,) * 4, mode="replicate")
    offsets = torch.randint(0, 2 * max_shift + 1, (images.shape[0], 2), generator=generator)
    return torch.stack(
        [padded[i, :, top : top + size_y, left : left + size_x] for i, (top, left) in enumerate(offsets.tolist())]
    )


def proximal_term(model: nn.Module, anchor: list[torch.Tensor], mu: float) -> torch.Tensor:
    """FedProx's (mu / 2) * ||w - w_anchor||^2 over all trainable parameters."""
    return 0.5 * mu * sum(((p - a) ** 2).sum() for p, a in zip(model.parameters(), anchor))


@dataclass(frozen=True)
class Schedule:
    """How a model is trained: `epochs` of SGD at `lr` over shuffled batches of `batch_size`, each image moved
    by up to `max_shift` pixels; shuffling and shifts come from a generator seeded with `seed`."""

    epochs: int
    lr: float
    batch_size: int
    seed: int
    device: torch.device
    max_shift: int = 0


def classifier_schedule(train: TrainSettings, epochs: int, seed: int) -> Schedule:
    """`epochs` of the run's classifier training (`train.lr`, `train.batch-size`, `train.augment-shift`) from `seed`."""
    return Schedule(epochs, train.lr, train.batch_size, seed, pick_device(), train.augment_shift)


def run_epochs(
    model: nn.Module,
    split: ImageSplit,
    schedule: Schedule,
    batch_loss: BatchLoss = cross_entropy_loss,
    on_epoch_start: Callable[[int], None] | None = None,
    progress: Progress | None = None,
    on_epoch_end: Callable[[nn.Module, int], None] | None = None,
    stop_after: int | None = None,
) -> float:
    """SGD (momentum 0.9, weight decay 5e-4, cosine learning rate) over `split`; returns the last epoch's mean loss.

    `batch_loss` lets a phase change the objective (FedProx, DSD) while sharing the loop;
    `on_epoch_start(epoch)` lets it update per-epoch state such as a distillation weight;
    `on_epoch_end(model, epoch)` sees the model after each epoch (e.g. to score it; training resumes in train mode);
    `stop_after` ends the training after that many epochs of the schedule (the learning rate follows the whole one).
    With `schedule.max_shift` > 0 every image is moved by a random offset of up to that many pixels
    (drawn from the seeded generator, so runs stay reproducible). `progress` logs the epochs' loss
    a few times.
    """
    epochs, lr, batch_size, device, max_shift = (
        schedule.epochs, schedule.lr, schedule.batch_size, schedule.device, schedule.max_shift
    )
    if len(split) == 0:
        raise ValueError("cannot train on an empty split")
    model.to(device).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(epochs, 1))
    generator = torch.Generator().manual_seed(schedule.seed)
    images, labels = split.images, split.labels
    mean_loss = float("nan")
    for epoch in range(epochs if stop_after is None else min(stop_after, epochs)):
        if on_epoch_start is not None:
            on_epoch_start(epoch)
        order = torch.randperm(len(split), generator=generator)
        total, count = 0.0, 0
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            x = float_pixels(images[idx])
            x = random_shift(x, max_shift, generator) if max_shift else x
            x, y = x.to(device), labels[idx].to(device)
            optimizer.zero_grad(set_to_none=True)
            loss = batch_loss(model, x, y)
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(idx)
            count += len(idx)
        scheduler.step()
        mean_loss = total / count
        if on_epoch_end is not None:
            on_epoch_end(model, epoch)
            model.train()
        if progress is not None:
            progress.update(epoch + 1, loss=mean_loss)
    return mean_loss


def train_supervised(
    model: nn.Module,
    split: ImageSplit,
    schedule: Schedule,
    proximal_mu: float = 0.0,
    progress: Progress | None = None,
    anchor: list[torch.Tensor] | None = None,
) -> float:
    """Cross-entropy training, with a proximal term (mu / 2) ||w - anchor||^2 when mu > 0: towards the starting
    weights (FedProx) unless `anchor` gives other weights (Ditto: the global model's).

    `progress` logs the epochs' loss a few times (see `run_epochs`).
    """
    if proximal_mu <= 0:
        return run_epochs(model, split, schedule, progress=progress)
    anchor = [p.detach().clone().to(schedule.device) for p in (anchor if anchor is not None else model.parameters())]

    def prox_loss(m: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return cross_entropy_loss(m, x, y) + proximal_term(m, anchor, proximal_mu)

    return run_epochs(model, split, schedule, batch_loss=prox_loss, progress=progress)


# Evaluation batches hold at most this many pixels per channel: 512 images up to 32 px, 10 at 224 px,
# so that evaluating large images does not take gigabytes of activations at once.
EVALUATION_BATCH_PIXELS = 512 * 32 * 32
MAX_EVALUATION_BATCH = 512


def evaluation_batch_size(images: torch.Tensor) -> int:
    """Images per evaluation batch for images of this size (see EVALUATION_BATCH_PIXELS)."""
    height, width = images.shape[-2:]
    return max(1, min(MAX_EVALUATION_BATCH, EVALUATION_BATCH_PIXELS // (height * width)))


@torch.no_grad()
def predict_logits(model: nn.Module, images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Logits of `model` for every image (float32 in [0, 1] or uint8), computed in eval mode, returned on the CPU."""
    model.to(device).eval()
    step = evaluation_batch_size(images)
    outs = [model(float_pixels(images[i : i + step]).to(device)).cpu() for i in range(0, len(images), step)]
    return torch.cat(outs) if outs else torch.empty(0)


def split_logits(model: nn.Module, split: ImageSplit, device: torch.device) -> torch.Tensor:
    """Logits of `model` for every image of `split`, which must not be empty."""
    if len(split) == 0:
        raise ValueError("cannot evaluate on an empty split")
    return predict_logits(model, split.images, device)


def evaluate_accuracy(model: nn.Module, split: ImageSplit, device: torch.device) -> float:
    """Top-1 accuracy of `model` on `split`."""
    return float((split_logits(model, split, device).argmax(dim=1) == split.labels).float().mean())


def evaluate_loss(model: nn.Module, split: ImageSplit, device: torch.device) -> float:
    """Mean cross-entropy of `model` on `split`."""
    return float(nn.functional.cross_entropy(split_logits(model, split, device), split.labels))
