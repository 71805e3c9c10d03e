"""digits-domains: disjoint domains outside a fixed base fold, deterministic styles that differ."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from warmfed_flwr.config import Settings
from warmfed_flwr.data import DataError
from warmfed_flwr.data.digits_domains import (
    BASE_FRACTION,
    DOMAIN_NAMES,
    base_fold_indices,
    digits_domain_set,
    domain_indices,
    grey_digits,
    load_digits_domains,
    sklearn_digits,
)
from warmfed_flwr.data.digits_styles import STYLES

NUM_DIGITS = 1797


@pytest.mark.parametrize("seed", [0, 7])
def test_domains_are_disjoint_cover_the_rest_and_never_touch_the_base_fold(seed: int) -> None:
    base = base_fold_indices()
    parts = [base] + [rows for domain in domain_indices(seed) for rows in (domain.train, domain.test)]
    joined = np.concatenate(parts)
    assert joined.size == NUM_DIGITS
    assert np.array_equal(np.sort(joined), np.arange(NUM_DIGITS))


def test_base_fold_is_stratified_and_the_same_for_every_run_seed() -> None:
    _, labels = sklearn_digits()
    base = base_fold_indices()
    assert abs(base.size - BASE_FRACTION * NUM_DIGITS) <= 1
    share_per_class = np.bincount(labels[base], minlength=10) / np.bincount(labels, minlength=10)
    assert np.all(np.abs(share_per_class - BASE_FRACTION) < 0.02)
    first, second = load_digits_domains(16, 0), load_digits_domains(16, 5)
    assert torch.equal(first.base.images, second.base.images)
    assert torch.equal(first.base.labels, second.base.labels)


def test_same_seed_gives_identical_tensors_and_other_seeds_differ() -> None:
    uncached = load_digits_domains.__wrapped__
    first, again, other = uncached(16, 3), uncached(16, 3), uncached(16, 4)
    for a, b, c in zip(first.domains, again.domains, other.domains):
        assert torch.equal(a.train.images, b.train.images) and torch.equal(a.test.labels, b.test.labels)
        assert not torch.equal(a.train.labels, c.train.labels)
    assert load_digits_domains(16, 3) is load_digits_domains(16, 3)


@pytest.mark.parametrize("image_size", [16, 32])
def test_sizes_value_range_and_stratified_train_test_splits(image_size: int) -> None:
    data = load_digits_domains(image_size, 0)
    assert tuple(domain.name for domain in data.domains) == DOMAIN_NAMES
    assert data.class_names == tuple("0123456789")
    assert data.base.images.shape == (len(data.base), 3, image_size, image_size)
    for domain in data.domains:
        for split in (domain.train, domain.test):
            assert split.images.dtype == torch.float32 and split.labels.dtype == torch.int64
            assert split.images.shape[1:] == (3, image_size, image_size)
            assert 0.0 <= split.images.min() and split.images.max() <= 1.0
            assert min(split.class_counts(10)) >= 5, f"{domain.name}: a digit is missing or rare"
        assert len(domain.train) + len(domain.test) in (359, 360)
        assert len(domain.test) == 90


def test_the_four_styles_look_different() -> None:
    domains = {domain.name: domain.train.images for domain in load_digits_domains(16, 0).domains}
    mean = {name: images.mean().item() for name, images in domains.items()}
    assert mean["clean"] < 0.4 < 0.6 < mean["inverted"]
    for grey_style in ("clean", "inverted"):
        images = domains[grey_style]
        assert torch.equal(images[:, 0], images[:, 1]) and torch.equal(images[:, 1], images[:, 2])
    corner = domains["thick"][:, :, 0, 0].mean(dim=0)  # the background: blue
    assert corner[2] > corner[0] + 0.3 and corner[2] > corner[1] + 0.2
    colour_spread = domains["textured"].std(dim=1).mean().item()  # channels disagree: a coloured photo
    assert colour_spread > 0.05
    background_spread = {name: images[:, :, 0, 0].std().item() for name, images in domains.items()}
    assert background_spread["thick"] > 0.04 > background_spread["clean"]  # Gaussian noise on a flat blue


def test_inverted_and_clean_are_exact_opposites_of_the_same_digits() -> None:
    grey = grey_digits(16)[:20]
    rng = np.random.default_rng(0)
    assert torch.allclose(STYLES["inverted"](grey, rng), 1.0 - STYLES["clean"](grey, rng))


def test_textured_blends_the_digit_into_a_photo_crop() -> None:
    blank = torch.zeros(4, 1, 16, 16)
    full = torch.ones(4, 1, 16, 16)
    background = STYLES["textured"](blank, np.random.default_rng(1))
    stroke = STYLES["textured"](full, np.random.default_rng(1))
    assert background.std() > 0.05  # a photo, not a flat colour
    assert torch.allclose(stroke, 1.0 - background)  # where the digit is, the photo is inverted


def test_class_restriction_is_refused_for_digits() -> None:
    settings = Settings.from_run_config({"data.classes": "1,7"}).data
    with pytest.raises(DataError, match="data.classes"):
        digits_domain_set(settings)
