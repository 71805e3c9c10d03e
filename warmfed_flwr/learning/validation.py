"""Personalization that does not hurt: a validation share of the client's own training images picks how many epochs
to train, and the global model is kept when no epoch beats it there.

Epochs are compared by their mean cross-entropy on the share rather than their accuracy: on the few dozen images a
client can spare, accuracy moves in steps of several points and ties often, while the loss ranks every epoch."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from warmfed_flwr.data.types import ImageSplit
from warmfed_flwr.learning.training import evaluate_loss


def hold_out(split: ImageSplit, fraction: float, seed: int) -> tuple[ImageSplit, ImageSplit]:
    """(train, validation) of `split`: from each class, floor(fraction x its images) drawn at random (seeded) for
    validation, so that a class with few images keeps them all for training; order kept within both parts."""
    rng = np.random.default_rng(seed)
    labels = split.labels.numpy()
    chosen: list[int] = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        chosen.extend(rng.choice(members, size=int(fraction * members.size), replace=False).tolist())
    validation = np.zeros(labels.size, dtype=bool)
    validation[chosen] = True
    return split.subset(np.flatnonzero(~validation)), split.subset(np.flatnonzero(validation))


class BestEpoch:
    """Scores a model on `validation` (its mean cross-entropy) after each epoch and remembers the best epoch.

    The starting model (the global one) sets the loss to beat: `kept_epoch` stays 0 when no epoch's
    loss is strictly lower.
    """

    def __init__(self, start: nn.Module, validation: ImageSplit, device: torch.device) -> None:
        self.validation, self.device = validation, device
        self.start_loss = self.best_loss = evaluate_loss(start, validation, device)
        self.kept_epoch = 0

    def observe(self, model: nn.Module, epoch: int) -> None:
        """Score `model` after epoch `epoch` (0-based); remember the epoch if its loss is below every earlier one."""
        loss = evaluate_loss(model, self.validation, self.device)
        if loss < self.best_loss:
            self.best_loss, self.kept_epoch = loss, epoch + 1
