"""Image-folder loading on a small generated tree: formats, shared labels, skipped files, clear errors,
and decoding that happens only for the client that owns the images."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from flwr.app import Context, RecordDict
from PIL import Image

from warmfed_flwr import data as data_package
from warmfed_flwr.client.context import report_unreadable_once
from warmfed_flwr.config import Settings
from warmfed_flwr.data import DataError, domain_names, load_client_data, load_domain_set, num_clients
from warmfed_flwr.data import images as images_module
from warmfed_flwr.data.imagefolder import load_image_folder, split_train_test
from warmfed_flwr.data.images import decode
from warmfed_flwr.data.types import ImageFiles, ImageSplit

COLOURS = {"bird": (0, 0, 255), "cat": (255, 0, 0), "dog": (0, 255, 0)}


def save(path: Path, colour: tuple[int, int, int], size: tuple[int, int] = (20, 12), mode: str = "RGB") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.new("RGB", size, colour)
    image = image.convert(mode) if mode != "RGB" else image
    image.save(path, format="JPEG" if path.suffix.lower() in (".jpg", ".jpeg") else "PNG")


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """photo: cat (png) + dog (.JPG); sketch: bird (png, RGBA, palette) + dog (.jpeg); two broken files."""
    for index in range(4):
        save(tmp_path / "photo" / "cat" / f"{index}.png", COLOURS["cat"])
        save(tmp_path / "photo" / "dog" / f"{index}.JPG", COLOURS["dog"], size=(30, 30))
        save(tmp_path / "sketch" / "dog" / f"{index}.jpeg", COLOURS["dog"])
    save(tmp_path / "sketch" / "bird" / "0.png", COLOURS["bird"])
    save(tmp_path / "sketch" / "bird" / "1.png", COLOURS["bird"], mode="RGBA")
    save(tmp_path / "sketch" / "bird" / "2.png", COLOURS["bird"], mode="P")
    save(tmp_path / "sketch" / "bird" / "3.png", COLOURS["bird"], mode="L")
    (tmp_path / "sketch" / "bird" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
    valid_jpeg = (tmp_path / "photo" / "dog" / "0.JPG").read_bytes()
    (tmp_path / "photo" / "dog" / "truncated.jpg").write_bytes(valid_jpeg[: len(valid_jpeg) // 2])
    (tmp_path / "photo" / "cat" / "notes.txt").write_text("not an image, not counted")
    (tmp_path / ".cache" / "cat").mkdir(parents=True)
    return tmp_path


def test_loads_every_domain_with_labels_shared_across_domains(tree: Path) -> None:
    data = load_image_folder(tree)
    assert data.class_names == ("bird", "cat", "dog")
    assert sorted(data.domains) == ["photo", "sketch"]
    photo, sketch = data.domains["photo"], data.domains["sketch"]
    assert isinstance(photo, ImageFiles) and isinstance(sketch, ImageFiles)  # listed, not decoded
    assert photo.class_counts(3) == [0, 4, 5]  # truncated.jpg is listed: only decoding finds it broken
    assert sketch.class_counts(3) == [5, 0, 4]
    for files in (photo, sketch):
        split, _ = decode(files, 8)
        assert split.images.shape[1:] == (3, 8, 8) and split.images.dtype == torch.uint8
        for image, label in zip(split.float_images(), split.labels):
            name = data.class_names[label]
            is_grey = torch.equal(image[0], image[1]) and torch.equal(image[1], image[2])
            colour_matches = torch.allclose(image.mean(dim=(1, 2)), torch.tensor(COLOURS[name]) / 255.0, atol=0.04)
            assert colour_matches or (name == "bird" and is_grey), f"{name} image has the wrong colour"


def test_grey_image_becomes_three_equal_channels(tree: Path) -> None:
    birds, _ = decode(load_image_folder(tree).domains["sketch"], 8)
    birds_images = birds.images[birds.labels == 0]
    grey = [image for image in birds_images if torch.equal(image[0], image[1]) and torch.equal(image[1], image[2])]
    assert len(birds_images) == 4 and len(grey) == 1


def test_unreadable_files_are_skipped_named_and_logged_once_per_node(
    tree: Path, caplog: pytest.LogCaptureFixture
) -> None:
    split, skipped = decode(load_image_folder(tree).domains["photo"], 8)
    assert [Path(path).name for path in skipped] == ["truncated.jpg"] and len(split) == 8
    settings = Settings.from_run_config(
        {"data.name": "imagefolder", "data.root": str(tree), "data.image-size": 8, "data.test-fraction": 0.5,
         "data.min-train-images": 2}
    ).data
    clients = [load_client_data(settings, pid) for pid in range(num_clients(settings))]
    unreadable = [line for client in clients for line in client.unreadable]
    assert len(unreadable) == 2 and all(line.startswith("skipped 1 unreadable image file(s) of client") for line in unreadable)
    assert "corrupt.png" in " ".join(unreadable) and "truncated.jpg" in " ".join(unreadable)
    reader = next(c for c in clients if c.unreadable)
    context = Context(run_id=1, node_id=1, node_config={}, state=RecordDict(), run_config={})
    with caplog.at_level(logging.WARNING, logger="flwr"):
        for _ in range(3):  # three phases on this node: one warning
            report_unreadable_once(reader, context)
    assert caplog.text.count("unreadable image file(s)") == 1 and reader.unreadable[0] in caplog.text
    listed = sum(len(domain.train) + len(domain.test) for domain in load_domain_set(settings).domains)
    assert sum(len(c.train) + len(c.test) for c in clients) == listed - 2


def test_class_subset(tree: Path) -> None:
    data = load_image_folder(tree, classes=("dog",))
    assert data.class_names == ("dog",)
    assert [len(split) for split in data.domains.values()] == [5, 4]
    with pytest.raises(DataError, match="data.classes names zebra.*bird, cat, dog"):
        load_image_folder(tree, classes=("dog", "zebra"))


def test_missing_root_names_the_path_and_the_layout(tmp_path: Path) -> None:
    missing = tmp_path / "office"
    with pytest.raises(DataError, match=rf"{missing} does not exist.*<root>/<domain>/<class>/<image>"):
        load_image_folder(missing)


def test_root_without_domains_and_domain_without_images_are_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="has no domain folders"):
        load_image_folder(tmp_path)
    save(tmp_path / "photo" / "cat" / "0.png", COLOURS["cat"])
    (tmp_path / "sketch" / "cat").mkdir(parents=True)
    with pytest.raises(DataError, match=rf"{tmp_path / 'sketch'} has no .png/.jpg/.jpeg images"):
        load_image_folder(tmp_path)


def test_split_train_test_is_stratified_disjoint_and_deterministic() -> None:
    labels = torch.arange(3).repeat_interleave(8)
    images = torch.arange(24, dtype=torch.float32).view(24, 1, 1, 1).expand(24, 3, 2, 2).contiguous()
    split = ImageSplit(images, labels)
    train, test = split_train_test(split, test_fraction=0.25, seed=0)
    assert test.class_counts(3) == [2, 2, 2] and train.class_counts(3) == [6, 6, 6]
    ids = torch.cat([train.images[:, 0, 0, 0], test.images[:, 0, 0, 0]]).sort().values
    assert torch.equal(ids, torch.arange(24, dtype=torch.float32))
    again, _ = split_train_test(split, test_fraction=0.25, seed=0)
    other, _ = split_train_test(split, test_fraction=0.25, seed=1)
    assert torch.equal(train.images, again.images) and not torch.equal(train.images, other.images)
    with pytest.raises(DataError, match="at least 2 images"):
        split_train_test(ImageSplit(images[:9], torch.tensor([0] * 8 + [1])), 0.25, seed=0)


def test_imagefolder_clients_through_the_entry_point(tree: Path) -> None:
    settings = Settings.from_run_config(
        {"data.name": "imagefolder", "data.root": str(tree), "data.image-size": 8, "data.test-fraction": 0.5,
         "data.min-train-images": 2, "data.clients-per-domain": 2}
    ).data
    assert domain_names(settings) == ("photo", "sketch")
    assert num_clients(settings) == 4
    client = load_client_data(settings, 3)
    assert client.domain == "sketch" and client.class_names == ("bird", "cat", "dog")
    assert client.train.images.dtype == torch.uint8 and client.train.images.shape[1:] == (3, 8, 8)
    assert len(client.train) + len(client.test) == 4  # 9 sketch files, one unreadable, a quarter of them
    assert np.isin(client.train.labels.numpy(), [0, 2]).all()


def test_counting_and_partitioning_clients_open_no_image(tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The launcher, the ServerApp and discovery count clients: that must cost file names, not pixels."""

    def no_image(*args: object, **kwargs: object) -> None:
        raise AssertionError("an image was opened while counting clients")

    monkeypatch.setattr(Image, "open", no_image)
    settings = Settings.from_run_config(
        {"data.name": "imagefolder", "data.root": str(tree), "data.image-size": 224, "data.clients-per-domain": 2,
         "data.test-fraction": 0.5, "data.min-train-images": 1, "data.partitioning": "dirichlet",
         "data.dirichlet-alpha": 100.0}
    ).data
    assert num_clients(settings) == 4
    assert domain_names(settings) == ("photo", "sketch")
    shards = data_package._domain_shards(settings, 1, 2)
    assert sum(len(train) for train, _ in shards) == len(load_domain_set(settings).domains[1].train)


def test_a_client_decodes_only_its_own_share(tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings.from_run_config(
        {"data.name": "imagefolder", "data.root": str(tree), "data.image-size": 8, "data.clients-per-domain": 2,
         "data.test-fraction": 0.5, "data.min-train-images": 1}
    ).data
    opened: list[str] = []
    read_image = images_module.read_image

    def counting_read_image(source: Path, image_size: int) -> torch.Tensor:
        opened.append(str(source))
        return read_image(source, image_size)

    monkeypatch.setattr(images_module, "read_image", counting_read_image)
    client = load_client_data(settings, 1)
    domain = load_domain_set(settings).domains[0]
    train_positions, test_positions = data_package._domain_shards(settings, 0, 2)[1]
    own = {str(domain.train.sources[i]) for i in train_positions} | {str(domain.test.sources[i]) for i in test_positions}
    assert set(opened) == own and len(opened) == len(own)
    assert len(own) < len(domain.train) + len(domain.test)
    unreadable = sum(Path(path).name == "truncated.jpg" for path in own)
    assert len(client.train) + len(client.test) == len(own) - unreadable


def test_imagefolder_needs_a_root() -> None:
    with pytest.raises(DataError, match="needs data.root"):
        num_clients(Settings.from_run_config({"data.name": "imagefolder"}).data)
