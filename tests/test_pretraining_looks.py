"""The tiny base's pre-training looks: seeded, broad, legible, and never a client's colour scheme or photo."""

from __future__ import annotations

import pytest
import torch

from warmfed_flwr.data.digits_domains import load_digits_domains
from warmfed_flwr.data.pretraining_looks import (
    EXCLUDED_SCHEMES,
    EXCLUSION_RADIUS,
    MIN_CONTRAST,
    colour_pairs,
    luminance,
    render_looks,
)


@pytest.fixture(scope="module")
def grey() -> torch.Tensor:
    return load_digits_domains(16, seed=0).base.images[:, :1]


def test_the_same_generator_seed_renders_the_same_looks(grey: torch.Tensor) -> None:
    first = render_looks(grey, torch.Generator().manual_seed(3))
    again = render_looks(grey, torch.Generator().manual_seed(3))
    other = render_looks(grey, torch.Generator().manual_seed(4))
    assert first.shape == (grey.shape[0], 3, 16, 16)
    assert float(first.min()) >= 0.0 and float(first.max()) <= 1.0
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


def test_colour_pairs_are_legible_and_keep_away_from_the_client_schemes() -> None:
    background, foreground = colour_pairs(20_000, torch.Generator().manual_seed(0))
    assert float((luminance(foreground) - luminance(background)).abs().min()) >= MIN_CONTRAST
    distance = torch.cdist(torch.cat([background, foreground], dim=1), EXCLUDED_SCHEMES)
    assert float(distance.min()) >= EXCLUSION_RADIUS


def test_the_looks_are_broad(grey: torch.Tensor) -> None:
    looks = render_looks(grey, torch.Generator().manual_seed(0))
    mean_colour = looks.mean(dim=(2, 3))
    assert float(mean_colour.std(dim=0).min()) > 0.15  # every channel's mean varies widely across images
    brightness = luminance(looks).mean(dim=(1, 2))
    assert float((brightness < 0.35).float().mean()) > 0.2 and float((brightness > 0.6).float().mean()) > 0.1
    detail = (looks - looks.mean(dim=(2, 3), keepdim=True)).std(dim=(1, 2, 3))
    assert float(detail.min()) > 0.03  # no image is a blank field: every digit leaves a mark


def test_grey_digits_of_the_wrong_shape_are_refused(grey: torch.Tensor) -> None:
    with pytest.raises(ValueError, match="N x 1 x S x S"):
        render_looks(grey.repeat(1, 3, 1, 1), torch.Generator())
