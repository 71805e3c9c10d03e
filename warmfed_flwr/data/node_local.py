"""Data a SuperNode holds itself (`data.name = "node-local"`): the folder its node config names as `data-root`.

A deployed SuperNode is started with `--node-config 'partition-id=K num-partitions=N data-root="/my/images"'`
and reads that folder and nothing else: `<data-root>/<class>/<image>`, split into train and test by
`data.test-fraction` and the run seed, or `<data-root>/train/<class>/<image>` and
`<data-root>/test/<class>/<image>` when the node has its own split. The run's `data.*` keys only
say how to read and split (image size, test fraction, minimum train images).

Nodes need not hold the same classes. At discovery each node reports its class names; the server
agrees on their sorted union and sends it with every later message, and a node maps its labels to
that list (a node lacking a class simply has no image of it).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch

from warmfed_flwr.config import DataSettings
from warmfed_flwr.data.errors import DataError
from warmfed_flwr.data.imagefolder import check_root, class_image_paths, split_train_test, subfolders
from warmfed_flwr.data.images import decoded
from warmfed_flwr.data.seeding import derived_seed
from warmfed_flwr.data.types import ClientData, ImageFiles, ImageSplit

DATA_ROOT_KEY = "data-root"  # node config key: the node's own image folder
DOMAIN_KEY = "domain"  # optional node config key: how results name this node's data (default: node-<partition-id>)
SPLIT_FOLDERS = ("train", "test")
HELP = (
    "give each SuperNode its own folder with --node-config 'partition-id=K num-partitions=N data-root=\"/path\"', "
    "laid out as <data-root>/<class>/<image>.png|jpg|jpeg (or <data-root>/train/<class>/... and "
    "<data-root>/test/<class>/...)"
)


@dataclass(frozen=True)
class NodeFolder:
    """A node's image files, split, with its own sorted class names (labels index these)."""

    class_names: tuple[str, ...]
    train: ImageFiles
    test: ImageFiles


def has_own_split(root: Path) -> bool:
    """True when the folder holds exactly the sub-folders train/ and test/."""
    return sorted(folder.name for folder in subfolders(root)) == sorted(SPLIT_FOLDERS)


@lru_cache(maxsize=2)
def node_folder(root: str, test_fraction: float, seed: int) -> NodeFolder:
    """List (not decode) the node's folder: its classes and its train and test files."""
    path = Path(root).expanduser().resolve()
    check_root(path, HELP)
    if has_own_split(path):
        classes = tuple(sorted({c.name for part in SPLIT_FOLDERS for c in subfolders(path / part)}))
        train = ImageFiles.of(*class_image_paths(path / "train", classes))
        test = ImageFiles.of(*class_image_paths(path / "test", classes))
    else:
        classes = tuple(folder.name for folder in subfolders(path))
        whole = ImageFiles.of(*class_image_paths(path, classes))
        if not len(whole):
            raise DataError(f"node data folder {path} has no images; {HELP}")
        try:
            train, test = split_train_test(whole, test_fraction, seed)
        except DataError as error:
            raise DataError(f"node data folder {path}: {error}") from error
    if not classes:
        raise DataError(f"node data folder {path} has no class folders; {HELP}")
    for part, files in (("train", train), ("test", test)):
        if not len(files):
            raise DataError(f"node data folder {path} has no {part} images; {HELP}")
    return NodeFolder(class_names=classes, train=train, test=test)


def read_node_folder(root: str, settings: DataSettings, partition_id: int) -> NodeFolder:
    """The node's folder, split with a seed of its own (run seed and partition id)."""
    return node_folder(root, settings.test_fraction, derived_seed(settings.seed, partition_id))


def to_agreed_labels(labels: torch.Tensor, own: tuple[str, ...], agreed: tuple[str, ...], where: str) -> torch.Tensor:
    """Labels indexing the node's own class names, re-numbered to index the agreed class list."""
    missing = [name for name in own if name not in agreed]
    if missing:
        raise DataError(f"{where}: classes {missing} are not among the agreed classes {list(agreed)}")
    mapping = torch.tensor([agreed.index(name) for name in own], dtype=torch.int64)
    return mapping[labels]


def node_client_data(
    root: str, settings: DataSettings, partition_id: int, domain: str, agreed: tuple[str, ...]
) -> ClientData:
    """The node's train and test images, decoded, with labels indexing `agreed` (the federation's classes)."""
    folder = read_node_folder(root, settings, partition_id)
    where = f"client {partition_id} (data-root {root})"
    splits, unreadable = [], []
    for part, files in (("train", folder.train), ("test", folder.test)):
        images = decoded(files, settings.image_size, f"{where}, {part} split", unreadable)
        labels = to_agreed_labels(images.labels, folder.class_names, agreed, where)
        splits.append(ImageSplit(images.images, labels))
    train, test = splits
    if len(train) < settings.min_train_images:
        raise DataError(
            f"{where} has {len(train)} readable training images, fewer than data.min-train-images="
            f"{settings.min_train_images}"
        )
    if not len(test):
        raise DataError(f"{where} has no readable test images")
    return ClientData(partition_id=partition_id, domain=domain, train=train, test=test, class_names=agreed,
                      unreadable=tuple(unreadable))
