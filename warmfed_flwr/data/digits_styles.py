"""The four visual styles of the digits-domains data set.

Each style turns grey digits (N x 1 x S x S in [0, 1], white strokes on black) into RGB images
(N x 3 x S x S in [0, 1]) that look the way one kind of domain does: the styles differ in
polarity, colour, texture, stroke width and noise, as DomainNet's domains differ.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.datasets import load_sample_images
from torchvision.transforms import functional as TF

Style = Callable[[torch.Tensor, np.random.Generator], torch.Tensor]

STROKE_YELLOW = torch.tensor([1.0, 0.85, 0.1]).view(1, 3, 1, 1)
BACKGROUND_BLUE = torch.tensor([0.1, 0.2, 0.6]).view(1, 3, 1, 1)
THICK_NOISE_STD = 0.06


def as_rgb(grey: torch.Tensor) -> torch.Tensor:
    """Grey N x 1 x S x S images repeated into three identical channels."""
    return grey.repeat(1, 3, 1, 1)


def clean(grey: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """White strokes on black, as the digits come."""
    return as_rgb(grey)


def inverted(grey: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """Dark strokes on a light background."""
    return as_rgb(1.0 - grey)


def textured(grey: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """MNIST-M-like: |photo crop - digit| per channel, with a random crop of scikit-learn's sample photos."""
    photos = [torch.from_numpy(np.array(photo, copy=True)).permute(2, 0, 1) for photo in load_sample_images().images]
    size = grey.shape[-1]
    backgrounds = []
    for _ in range(grey.shape[0]):
        photo = photos[rng.integers(len(photos))]
        crop = int(rng.integers(size, 3 * size + 1))
        top = int(rng.integers(photo.shape[1] - crop + 1))
        left = int(rng.integers(photo.shape[2] - crop + 1))
        backgrounds.append(TF.resized_crop(photo, top, left, crop, crop, [size, size], antialias=True))
    background = torch.stack(backgrounds).float() / 255.0
    return (background - grey).abs()


def thick(grey: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """Dilated, blurred yellow strokes on blue with Gaussian noise."""
    dilated = F.max_pool2d(grey, kernel_size=3, stride=1, padding=1)
    thickened = 0.5 * (grey + dilated)
    sigma = 0.04 * grey.shape[-1]
    blurred = TF.gaussian_blur(thickened, kernel_size=2 * int(np.ceil(2 * sigma)) + 1, sigma=sigma)
    coloured = BACKGROUND_BLUE + blurred * (STROKE_YELLOW - BACKGROUND_BLUE)
    noise = torch.from_numpy(rng.normal(0.0, THICK_NOISE_STD, size=coloured.shape).astype(np.float32))
    return (coloured + noise).clamp(0.0, 1.0)


STYLES: dict[str, Style] = {"clean": clean, "inverted": inverted, "textured": textured, "thick": thick}
