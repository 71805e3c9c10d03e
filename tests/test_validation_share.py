"""Personalization that does not hurt: the validation share, the epoch it keeps and the fallback to the global model."""

from __future__ import annotations

import copy

import numpy as np
import torch

from warmfed_flwr.config import DsdSettings
from warmfed_flwr.data.types import ImageSplit
from warmfed_flwr.learning.dsd import train_personalized
from warmfed_flwr.learning.models import build_classifier
from warmfed_flwr.learning.training import Schedule, evaluate_accuracy, evaluate_loss, run_epochs
from warmfed_flwr.learning.validation import BestEpoch, hold_out

CPU = torch.device("cpu")


def coloured_squares(count: int, seed: int) -> ImageSplit:
    """Four classes, each a colour of its own with noise: learnable in a few epochs."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(count) % 4
    colours = torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0], [1.0, 1.0, 0]])
    images = colours[labels].view(count, 3, 1, 1).expand(count, 3, 16, 16)
    return ImageSplit((0.7 * images + 0.3 * torch.rand(count, 3, 16, 16, generator=generator)).contiguous(), labels)


def dsd(mode: str = "none", epochs: int = 4) -> DsdSettings:
    return DsdSettings(mode, 1.0, 2.0, epochs, 0.05, "global", synthetic_share=False, validation_fraction=0.25)


def test_hold_out_takes_the_share_of_each_class_rounded_down_and_is_seeded() -> None:
    labels = torch.tensor([0] * 10 + [1] * 4 + [2] * 3)
    split = ImageSplit(torch.arange(17, dtype=torch.float32).view(17, 1, 1, 1).expand(17, 3, 2, 2).contiguous(), labels)
    train, validation = hold_out(split, 0.25, seed=7)
    assert validation.class_counts(3) == [2, 1, 0]  # floor(2.5), floor(1.0), floor(0.75): class 2 keeps all 3 to train
    assert train.class_counts(3) == [8, 3, 3]
    seen = sorted(train.images[:, 0, 0, 0].tolist() + validation.images[:, 0, 0, 0].tolist())
    assert seen == list(range(17))  # disjoint, and together every image
    again, _ = hold_out(split, 0.25, seed=7)
    other, _ = hold_out(split, 0.25, seed=8)
    assert torch.equal(again.images, train.images) and not torch.equal(other.images, train.images)
    everything, none = hold_out(split, 0.0, seed=7)
    assert len(none) == 0 and torch.equal(everything.images, split.images)


def test_no_epoch_beats_the_global_model_so_none_is_kept() -> None:
    """Fine-tuning on labels shifted by one class can only lose on the true validation labels: epoch 0 (the global
    model) keeps the lowest validation loss, scored after every epoch."""
    train, validation = coloured_squares(64, seed=0), coloured_squares(32, seed=1)
    teacher = build_classifier("cnn", 4, 16, seed=0)
    run_epochs(teacher, train, Schedule(6, 0.05, 16, 0, CPU))
    assert evaluate_accuracy(teacher, validation, CPU) == 1.0
    shifted = ImageSplit(train.images, (train.labels + 1) % 4)
    best = BestEpoch(teacher, validation, CPU)
    observed = []

    def observe(model: torch.nn.Module, epoch: int) -> None:
        observed.append(epoch)
        best.observe(model, epoch)

    student = train_personalized(teacher, shifted, dsd(), Schedule(4, 0.05, 16, 0, CPU), on_epoch_end=observe)
    assert observed == [0, 1, 2, 3]
    assert evaluate_accuracy(student, validation, CPU) < 1.0  # the last epoch did lose
    assert best.kept_epoch == 0 and best.best_loss == best.start_loss == evaluate_loss(teacher, validation, CPU)


def test_the_best_epoch_count_is_kept_and_a_stopped_run_repeats_the_trial_up_to_it() -> None:
    """An untrained start is beaten; training again with `stop_after` = the kept epoch follows the same trajectory
    (the learning rate follows the whole schedule) and stops there."""
    train, validation = coloured_squares(64, seed=0), coloured_squares(32, seed=1)
    untrained = build_classifier("cnn", 4, 16, seed=0)
    best = BestEpoch(untrained, validation, CPU)
    snapshots = {}

    def observe(model: torch.nn.Module, epoch: int) -> None:
        snapshots[epoch + 1] = copy.deepcopy(model.state_dict())
        best.observe(model, epoch)

    schedule = Schedule(3, 0.05, 16, 0, CPU)
    train_personalized(untrained, train, dsd(epochs=3), schedule, on_epoch_end=observe)
    assert best.kept_epoch >= 1 and best.best_loss < best.start_loss
    stopped = train_personalized(untrained, train, dsd(epochs=3), schedule, stop_after=best.kept_epoch)
    assert all(torch.equal(a, b) for a, b in zip(stopped.state_dict().values(), snapshots[best.kept_epoch].values()))
    assert np.isclose(evaluate_loss(stopped, validation, CPU), best.best_loss)
