"""digits-domains and digits-far: scikit-learn's 1,797 real 8x8 digits made into four styled, disjoint domains.

A fixed, stratified ~20% "base" fold (the same for every run seed) stays unstyled: the tiny
diffusion model is pre-trained on it once and shipped, so no client may own those images. The
rest is split by the run seed into four disjoint, stratified domains, each styled and split into
its own train and test part: digits-domains in styles near the base's pre-training looks
(`digits_styles`), digits-far in drawn styles far from them (`far_styles`).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import StratifiedKFold, train_test_split
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF

from warmfed_flwr.config import DataSettings
from warmfed_flwr.data.digits_styles import STYLES, Style, as_rgb
from warmfed_flwr.data.far_styles import FAR_STYLES
from warmfed_flwr.data.errors import DataError
from warmfed_flwr.data.seeding import derived_seed
from warmfed_flwr.data.types import DomainData, DomainSet, ImageSplit

DOMAIN_NAMES: tuple[str, ...] = ("clean", "inverted", "textured", "thick")
STYLE_SETS: dict[str, dict[str, Style]] = {
    "digits-domains": {name: STYLES[name] for name in DOMAIN_NAMES},
    "digits-far": FAR_STYLES,
}
CLASS_NAMES: tuple[str, ...] = tuple(str(digit) for digit in range(10))
BASE_FRACTION = 0.2
BASE_FOLD_SEED = 2503_03110  # fixed on purpose: the shipped base model was trained on this fold
DIGITS_MAX_VALUE = 16.0


@lru_cache(maxsize=1)
def sklearn_digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits as (images N x 8 x 8 with values 0..16, labels N), read once per process."""
    bunch = load_digits()
    return bunch.images, bunch.target


@dataclass(frozen=True)
class DigitsDomains:
    """The unstyled base fold, the four styled domains and the class names "0".."9"."""

    base: ImageSplit
    domains: tuple[DomainData, ...]
    class_names: tuple[str, ...]


@dataclass(frozen=True)
class DomainIndices:
    """Which of scikit-learn's digits (by row index) one domain uses for train and test."""

    train: np.ndarray
    test: np.ndarray


def base_fold_indices() -> np.ndarray:
    """Row indices of the base fold: stratified, BASE_FRACTION of the digits, independent of any run seed."""
    _, labels = sklearn_digits()
    _, base = train_test_split(
        np.arange(labels.size), test_size=BASE_FRACTION, stratify=labels, random_state=BASE_FOLD_SEED
    )
    return np.sort(base)


def domain_indices(seed: int, test_fraction: float = 0.25, num_domains: int = len(DOMAIN_NAMES)) -> tuple[DomainIndices, ...]:
    """Row indices of each domain's train and test part: disjoint, stratified, outside the base fold."""
    _, labels = sklearn_digits()
    pool = np.setdiff1d(np.arange(labels.size), base_fold_indices())
    folds = StratifiedKFold(n_splits=num_domains, shuffle=True, random_state=seed)
    result = []
    for domain_index, (_, fold) in enumerate(folds.split(pool, labels[pool])):
        rows = pool[fold]
        train, test = train_test_split(
            rows, test_size=test_fraction, stratify=labels[rows], random_state=derived_seed(seed, domain_index)
        )
        result.append(DomainIndices(train=train, test=test))
    return tuple(result)


def grey_digits(image_size: int) -> torch.Tensor:
    """All digits as N x 1 x image_size x image_size float32 in [0, 1], bilinearly upsampled."""
    images = torch.from_numpy(sklearn_digits()[0] / DIGITS_MAX_VALUE).float().unsqueeze(1)
    resized = TF.resize(images, [image_size, image_size], interpolation=InterpolationMode.BILINEAR, antialias=True)
    return resized.clamp(0.0, 1.0)


@lru_cache(maxsize=8)
def load_digits_domains(
    image_size: int, seed: int, test_fraction: float = 0.25, styles: str = "digits-domains"
) -> DigitsDomains:
    """The base fold and the four domains styled by `STYLE_SETS[styles]` at `image_size` px; identical tensors for
    the same arguments.

    Cached in-process: the result is shared, so treat its tensors as read-only.
    """
    style_set = STYLE_SETS[styles]
    grey = grey_digits(image_size)
    labels = torch.from_numpy(sklearn_digits()[1]).long()
    base_rows = torch.from_numpy(base_fold_indices())
    base = ImageSplit(as_rgb(grey[base_rows]).contiguous(), labels[base_rows])
    domains = []
    rows_of = domain_indices(seed, test_fraction, len(style_set))
    for domain_index, ((name, style), rows) in enumerate(zip(style_set.items(), rows_of)):
        rng = np.random.default_rng(derived_seed(seed, domain_index, image_size))
        splits = []
        for part in (rows.train, rows.test):
            index = torch.from_numpy(part)
            splits.append(ImageSplit(style(grey[index], rng).contiguous(), labels[index]))
        domains.append(DomainData(name=name, train=splits[0], test=splits[1]))
    return DigitsDomains(base=base, domains=tuple(domains), class_names=CLASS_NAMES)


def digits_domain_set(settings: DataSettings) -> DomainSet:
    """The four digits domains of `settings.name` (digits-domains or digits-far) for its image size, seed and test
    fraction."""
    if settings.classes:
        raise DataError(
            f"data.classes={','.join(settings.classes)} is set, but {settings.name} always uses the digits 0-9; "
            "leave data.classes empty"
        )
    data = load_digits_domains(settings.image_size, settings.seed, settings.test_fraction, settings.name)
    return DomainSet(domains=data.domains, class_names=data.class_names)
