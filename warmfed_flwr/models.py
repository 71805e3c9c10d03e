"""Classifier factory: a small CNN (the CPU default) and torchvision's ResNet-18."""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models import resnet18


class _Normalize(nn.Module):
    """Maps images in [0, 1] to [-1, 1] so every model sees centred inputs."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 2.0 - 1.0


def _small_cnn(num_classes: int, width: int = 32) -> nn.Module:
    """Three conv blocks with GroupNorm (no batch statistics to average), global pooling, linear head."""

    def block(c_in: int, c_out: int) -> list[nn.Module]:
        return [nn.Conv2d(c_in, c_out, 3, padding=1), nn.GroupNorm(8, c_out), nn.ReLU(inplace=True)]

    return nn.Sequential(
        _Normalize(),
        *block(3, width),
        nn.MaxPool2d(2),
        *block(width, 2 * width),
        nn.MaxPool2d(2),
        *block(2 * width, 2 * width),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(2 * width, num_classes),
    )


def _resnet18(num_classes: int, image_size: int) -> nn.Module:
    """torchvision ResNet-18; below 64 px the stem is the CIFAR one (3x3 conv, no max-pool)."""
    model = resnet18(weights=None, num_classes=num_classes)
    if image_size < 64:
        model.conv1 = nn.Conv2d(3, 64, 3, stride=1, padding=1, bias=False)
        model.maxpool = nn.Identity()
    return nn.Sequential(_Normalize(), model)


def build_classifier(name: str, num_classes: int, image_size: int, seed: int = 0) -> nn.Module:
    """A freshly initialised classifier; the same seed gives the same initial weights."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if name == "cnn":
            return _small_cnn(num_classes)
        if name == "resnet18":
            return _resnet18(num_classes, image_size)
    raise ValueError(f"config key 'model.name': unknown classifier {name!r} (use cnn or resnet18)")
