"""scripts/make_image_folder.py: the layout, seeded bytes, distinct images, a look per domain, learnable classes."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.linear_model import LogisticRegression

from warmfed_flwr.config import Settings
from warmfed_flwr.data import domain_names, load_domain_set, num_clients

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "make_image_folder.py"


def make(out: Path, *args: str) -> None:
    subprocess.run([sys.executable, str(SCRIPT), "--out", str(out), *args], check=True, capture_output=True)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("generated")
    make(out, "--domains", "2", "--classes", "4", "--per-class", "20", "--size", "32")
    return out


def digest(folder: Path) -> dict[str, str]:
    return {str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest() for path in folder.rglob("*.jpg")}


def test_layout_is_domain_class_image(folder: Path) -> None:
    files = sorted(folder.rglob("*.jpg"))
    assert len(files) == 2 * 4 * 20
    assert sorted({path.parent.parent.name for path in files}) == ["domain00", "domain01"]
    assert sorted({path.parent.name for path in files}) == ["class000", "class001", "class002", "class003"]
    with Image.open(files[0]) as image:
        assert image.size == (32, 32) and image.mode == "RGB"
    settings = Settings.from_run_config({"data.name": "imagefolder", "data.root": str(folder)}).data
    assert domain_names(settings) == ("domain00", "domain01") and num_clients(settings) == 2
    assert load_domain_set(settings).class_names == ("class000", "class001", "class002", "class003")


def test_same_seed_same_bytes_other_seed_other_images(folder: Path, tmp_path: Path) -> None:
    make(tmp_path / "again", "--domains", "2", "--classes", "4", "--per-class", "20", "--size", "32")
    make(tmp_path / "other", "--domains", "2", "--classes", "4", "--per-class", "20", "--size", "32", "--seed", "1")
    assert digest(tmp_path / "again") == digest(folder)
    assert set(digest(tmp_path / "other").values()).isdisjoint(digest(folder).values())


def test_images_are_distinct(folder: Path) -> None:
    pixels = {np.asarray(Image.open(path)).tobytes() for path in folder.rglob("*.jpg")}
    assert len(pixels) == 2 * 4 * 20


def pixels_and_labels(domain: Path) -> tuple[np.ndarray, np.ndarray]:
    images, labels = [], []
    for label, class_folder in enumerate(sorted(domain.iterdir())):
        for path in sorted(class_folder.iterdir()):
            images.append(np.asarray(Image.open(path).convert("L").resize((16, 16)), dtype=np.float32).ravel() / 255)
            labels.append(label)
    return np.array(images), np.array(labels)


def test_each_domain_has_its_own_look(folder: Path) -> None:
    means = [
        np.mean([np.asarray(Image.open(path), dtype=np.float32).mean(axis=(0, 1)) for path in (folder / d).rglob("*.jpg")], axis=0)
        for d in ("domain00", "domain01")
    ]
    assert np.abs(means[0] - means[1]).max() > 30  # mean colour, 0..255


def test_classes_are_learnable_within_each_domain(folder: Path) -> None:
    for domain in ("domain00", "domain01"):
        images, labels = pixels_and_labels(folder / domain)
        train = np.arange(len(labels)) % 20 < 14
        classifier = LogisticRegression(max_iter=2000).fit(images[train], labels[train])
        assert classifier.score(images[~train], labels[~train]) >= 0.6  # chance: 0.25


def test_bad_arguments_are_refused(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--out", str(tmp_path), "--domains", "0", "--classes", "2", "--per-class", "1",
         "--size", "8"],
        capture_output=True, text=True,
    )
    assert result.returncode == 2 and "--domains must be at least 1" in result.stderr
