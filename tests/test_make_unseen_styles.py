"""scripts/make_unseen_styles.py: an image folder of the client digits in four unseen styles, seeded."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch

from make_unseen_styles import client_digits, make_unseen_styles
from warmfed_flwr.config import Settings
from warmfed_flwr.data import load_domain_set
from warmfed_flwr.data.digits_domains import base_fold_indices, sklearn_digits
from warmfed_flwr.data.far_styles import FAR_STYLES as STYLES
from warmfed_flwr.data.images import decoded
from warmfed_flwr.data.types import float_pixels


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("unseen")
    make_unseen_styles(out, size=16)
    return out


def digest(folder: Path) -> dict[str, str]:
    return {str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest() for path in folder.rglob("*.png")}


def test_every_client_digit_once_in_one_style_and_no_base_fold_digit(folder: Path) -> None:
    files = sorted(folder.rglob("*.png"))
    _, labels = sklearn_digits()
    assert len(files) == labels.size - base_fold_indices().size
    rows = {int(path.stem) for path in files}
    assert len(rows) == len(files) and not rows & set(base_fold_indices().tolist())
    assert {path.parent.parent.name for path in files} == set(STYLES)
    assert all(int(path.parent.name) == labels[int(path.stem)] for path in files)


def test_the_same_arguments_write_the_same_bytes(folder: Path, tmp_path: Path) -> None:
    make_unseen_styles(tmp_path, size=16)
    assert digest(tmp_path) == digest(folder)


def test_the_folder_loads_as_four_domains_of_ten_digits_that_look_different(folder: Path) -> None:
    settings = Settings.from_run_config({"data.name": "imagefolder", "data.root": str(folder)}).data
    data = load_domain_set(settings)
    assert [domain.name for domain in data.domains] == sorted(STYLES)
    assert data.class_names == tuple(str(digit) for digit in range(10))
    means = torch.stack([float_pixels(decoded(domain.train, 16, domain.name).images).mean(dim=(0, 2, 3)) for domain in data.domains])
    assert float(torch.cdist(means, means).add(torch.eye(len(means))).min()) > 0.05


def test_each_style_draws_the_digit_and_differs_from_the_others() -> None:
    grey, _, _ = client_digits(32)
    styled = {name: style(grey[:50], np.random.default_rng(0)).clamp(0.0, 1.0) for name, style in STYLES.items()}
    for name, images in styled.items():
        assert float(images.std(dim=(1, 2, 3)).min()) > 0.05, name  # the digit leaves a mark on every image
    names = list(styled)
    for index, name in enumerate(names):
        for other in names[index + 1 :]:
            assert float((styled[name] - styled[other]).abs().mean()) > 0.1, (name, other)
