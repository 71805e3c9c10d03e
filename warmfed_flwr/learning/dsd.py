"""Dynamic self-distillation (DSD): the personalized model learns from the client's data and,
where the global model is right about this client's data, from the global model.

L = CE(s(x), y) + lambda(t) * w(x) * T^2 * KL(softmax(g(x)/T) || softmax(s(x)/T))

with g the frozen global model (teacher), s the student (initialised from g), T the temperature,
w(x) = p_g(y|x) the teacher's probability of the true label (mode "confidence"; 1 in mode
"constant") and lambda(t) = lambda_0 * (1 + cos(pi * t / E)) / 2 over epochs t = 0..E-1 (mode
"confidence"; constant lambda_0 in mode "constant"; 0 in mode "none", i.e. plain fine-tuning).
With `dsd.teacher = "global-or-self"` the teacher is chosen per sample between g and the student's
own running average (an exponential moving average of its weights, the "self" of
self-distillation): whichever gives the true label the higher probability.
The paper's full text is not available: this weighting and schedule are warmfed-flwr's own reading
of its DSD, chosen because distilling only where the global model is right for this client keeps
what the warm start knows without pulling the student towards the global model's mistakes (docs/method.md).
"""

from __future__ import annotations

import copy
import math
from dataclasses import replace
from typing import Callable

import torch
from torch import nn
from torch.nn import functional as F
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from warmfed_flwr.config import DsdSettings
from warmfed_flwr.data.types import ImageSplit
from warmfed_flwr.learning.training import Schedule, run_epochs
from warmfed_flwr.logs import Progress


SELF_TEACHER_DECAY = 0.99  # per optimizer step: the running average spans about the last 100 batches


def choose_teacher(global_logits: torch.Tensor, self_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per sample, the logits of whichever teacher gives the true label the higher probability."""
    p_global = F.softmax(global_logits, dim=1).gather(1, labels[:, None])
    p_self = F.softmax(self_logits, dim=1).gather(1, labels[:, None])
    return torch.where(p_self > p_global, self_logits, global_logits)


def distillation_weight(lambda0: float, epoch: int, epochs: int, mode: str) -> float:
    """lambda(t) for the given mode: cosine decay, constant, or zero."""
    if mode == "none":
        return 0.0
    if mode == "constant":
        return lambda0
    if mode == "confidence":
        return lambda0 * 0.5 * (1.0 + math.cos(math.pi * epoch / max(epochs, 1)))
    raise ValueError(f"config key 'dsd.mode': unknown mode {mode!r} (use confidence, constant or none)")


def dsd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    weight: float,
    temperature: float,
    mode: str,
) -> torch.Tensor:
    """CE(student, y) + weight * mean_x[w(x) * T^2 * KL(teacher_T || student_T)]; no gradient reaches the teacher."""
    ce = F.cross_entropy(student_logits, labels)
    if weight == 0.0:
        return ce
    teacher_logits = teacher_logits.detach()
    log_p_student = F.log_softmax(student_logits / temperature, dim=1)
    log_p_teacher = F.log_softmax(teacher_logits / temperature, dim=1)
    kl = (log_p_teacher.exp() * (log_p_teacher - log_p_student)).sum(dim=1)
    if mode == "confidence":
        per_sample = F.softmax(teacher_logits, dim=1).gather(1, labels[:, None]).squeeze(1)
    else:
        per_sample = torch.ones_like(kl)
    return ce + weight * (per_sample * kl).mean() * temperature**2


def train_personalized(
    teacher: nn.Module,
    split: ImageSplit,
    dsd: DsdSettings,
    schedule: Schedule,
    progress_label: str | None = None,
    on_epoch_end: Callable[[nn.Module, int], None] | None = None,
    stop_after: int | None = None,
) -> nn.Module:
    """A personalized copy of `teacher` trained on `split` with DSD; the teacher is left untouched.

    `schedule` gives the batches, seed, device and shift augmentation (teacher and student see the
    same shifted batch); its epochs and learning rate are `dsd.epochs` and `dsd.lr`.
    With `progress_label` the epochs' loss is logged a few times; `on_epoch_end(student, epoch)` sees
    the student after each epoch (`validation.BestEpoch.observe`); `stop_after` ends it after that many epochs.
    """
    schedule = replace(schedule, epochs=dsd.epochs, lr=dsd.lr)
    teacher = teacher.to(schedule.device).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    student = copy.deepcopy(teacher)
    for p in student.parameters():
        p.requires_grad_(True)
    state = {"weight": 0.0}
    running_average = None
    if dsd.teacher == "global-or-self":
        running_average = AveragedModel(student, multi_avg_fn=get_ema_multi_avg_fn(SELF_TEACHER_DECAY), use_buffers=True)

    def set_weight(epoch: int) -> None:
        state["weight"] = distillation_weight(dsd.lambda_, epoch, dsd.epochs, dsd.mode)

    def batch_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        student_logits = model(x)
        if state["weight"] == 0.0:
            return F.cross_entropy(student_logits, y)
        with torch.no_grad():
            teacher_logits = teacher(x)
            if running_average is not None:
                running_average.update_parameters(model)  # the student's weights after the last step
                teacher_logits = choose_teacher(teacher_logits, running_average.eval()(x), y)
        return dsd_loss(student_logits, teacher_logits, y, state["weight"], dsd.temperature, dsd.mode)

    progress = Progress(progress_label and f"[dsd] {progress_label}", dsd.epochs, unit="epoch")
    run_epochs(student, split, schedule, batch_loss=batch_loss, on_epoch_start=set_weight, progress=progress,
               on_epoch_end=on_epoch_end, stop_after=stop_after)
    return student
