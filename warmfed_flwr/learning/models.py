"""Classifier factory: a small CNN (the CPU default) and torchvision's ResNet-18, optionally ImageNet-initialised."""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models import ResNet, resnet18

from warmfed_flwr.config import Settings
from warmfed_flwr.learning.pretrained import apply_imagenet_weights
from warmfed_flwr.logs import logger

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class _Normalize(nn.Module):
    """Maps images in [0, 1] to [-1, 1] so the small CNN sees centred inputs."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 2.0 - 1.0


class _ImageNetNormalize(nn.Module):
    """Standardises images in [0, 1] with ImageNet's channel statistics, the inputs ImageNet weights expect.

    The statistics are non-persistent buffers: they follow the model's device but stay out of its state dict.
    """

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def _small_cnn(num_classes: int, width: int = 32, batch_norm: bool = False) -> nn.Module:
    """Three conv blocks, global pooling, linear head; GroupNorm (no batch statistics to average) or, for
    FedBN, BatchNorm."""

    def block(c_in: int, c_out: int) -> list[nn.Module]:
        norm = nn.BatchNorm2d(c_out) if batch_norm else nn.GroupNorm(8, c_out)
        return [nn.Conv2d(c_in, c_out, 3, padding=1), norm, nn.ReLU(inplace=True)]

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
    """torchvision ResNet-18 on ImageNet-standardised inputs.

    Below 64 px the stem is the CIFAR one (3x3 conv, no max-pool), which ImageNet's 7x7 conv1 cannot fill.
    """
    model = resnet18(weights=None, num_classes=num_classes)
    if image_size < 64:
        model.conv1 = nn.Conv2d(3, 64, 3, stride=1, padding=1, bias=False)
        model.maxpool = nn.Identity()
    return nn.Sequential(_ImageNetNormalize(), model)


def build_classifier(name: str, num_classes: int, image_size: int, seed: int = 0) -> nn.Module:
    """A randomly initialised classifier (see `initial_classifier` for ImageNet weights); same seed, same weights."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if name == "cnn":
            return _small_cnn(num_classes)
        if name == "cnn-bn":
            return _small_cnn(num_classes, batch_norm=True)
        if name == "resnet18":
            return _resnet18(num_classes, image_size)
    raise ValueError(f"config key 'model.name': unknown classifier {name!r} (use cnn, cnn-bn or resnet18)")


def initial_classifier(settings: Settings, num_classes: int) -> nn.Module:
    """The seeded classifier a run starts from; a ResNet-18 gets ImageNet weights as `model.pretrained` says."""
    chosen = settings.model
    model = build_classifier(chosen.name, num_classes, settings.data.image_size, seed=settings.seed)
    if chosen.name == "resnet18":
        apply_imagenet_weights(next(m for m in model.modules() if isinstance(m, ResNet)), chosen.pretrained)
    elif chosen.pretrained != "none":
        logger.info("%s: config key 'model.pretrained' (%r) has no effect: it applies to resnet18 only",
                    chosen.name, chosen.pretrained)
    return model
