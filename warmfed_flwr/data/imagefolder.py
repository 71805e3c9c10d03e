"""Image-folder data sets: `root/<domain>/<class>/*.{png,jpg,jpeg}` (Office-Caltech10, DomainNet, your own).

Class names are the sorted union of the class folders of all domains, so a label means the same
class in every domain even when some domain lacks some classes. Loading lists the files and their
labels only; pixels are decoded by the client that owns them, which skips and logs unreadable files
rather than failing a long run.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Iterable

import numpy as np
from sklearn.model_selection import train_test_split

from warmfed_flwr.config import DataSettings
from warmfed_flwr.data.errors import DataError
from warmfed_flwr.data.seeding import derived_seed
from warmfed_flwr.data.types import DomainData, DomainSet, ImageFiles, Split

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
LAYOUT_HELP = (
    "arrange the images as <root>/<domain>/<class>/<image>.png|jpg|jpeg (one folder per domain, one "
    "sub-folder per class) and point data.root at <root>"
)


@dataclass(frozen=True)
class ImageFolderData:
    """Every domain's image files (not yet split) and the shared class names."""

    domains: dict[str, ImageFiles]
    class_names: tuple[str, ...]


def is_image_file(path: Path) -> bool:
    """True for a regular, non-hidden file whose extension is .png, .jpg or .jpeg (any case)."""
    return path.is_file() and not path.name.startswith(".") and path.suffix.lower() in IMAGE_EXTENSIONS


def subfolders(folder: Path) -> list[Path]:
    """The non-hidden sub-folders of `folder`, sorted by name."""
    return sorted(child for child in folder.iterdir() if child.is_dir() and not child.name.startswith("."))


def check_root(root: Path, help_text: str = LAYOUT_HELP) -> None:
    """Raise a DataError naming `root` if it is not an existing folder."""
    if not root.is_dir():
        raise DataError(f"data folder {root} does not exist (or is not a folder); {help_text}")


def domain_folders(root: Path, wanted: tuple[str, ...] = (), help_text: str = LAYOUT_HELP) -> list[Path]:
    """The domain folders under `root`: all of them, or exactly `wanted` (each must exist)."""
    check_root(root, help_text)
    if wanted:
        missing = [name for name in wanted if not (root / name).is_dir()]
        if missing:
            raise DataError(f"data folder {root} lacks the domain folder(s) {', '.join(missing)}; {help_text}")
        return [root / name for name in wanted]
    found = subfolders(root)
    if not found:
        raise DataError(f"data folder {root} has no domain folders; {help_text}")
    return found


def restrict_classes(found: Iterable[str], wanted: tuple[str, ...], root: Path) -> tuple[str, ...]:
    """The sorted class names to load: all of `found`, or `wanted` if given (each must be found)."""
    found = sorted(set(found))
    if not wanted:
        return tuple(found)
    missing = sorted(set(wanted) - set(found))
    if missing:
        raise DataError(
            f"data.classes names {', '.join(missing)}, not found under {root} (class folders there: {', '.join(found)})"
        )
    return tuple(sorted(set(wanted)))


def class_image_paths(domain: Path, class_names: tuple[str, ...]) -> tuple[list[Path], list[int]]:
    """The image files of `domain/<class>/` for each class in `class_names` that it has, with their labels."""
    paths, labels = [], []
    for label, name in enumerate(class_names):
        folder = domain / name
        if folder.is_dir():
            files = sorted(path for path in folder.iterdir() if is_image_file(path))
            paths += files
            labels += [label] * len(files)
    return paths, labels


def load_image_folder(
    root: str | Path, classes: tuple[str, ...] = (), domains: tuple[str, ...] = ()
) -> ImageFolderData:
    """List `root/<domain>/<class>/*`: every domain or only `domains`, every class or only `classes`.

    Reads directory entries only, no image. Cached in-process per (resolved root, classes, domains).
    """
    return _load_image_folder(Path(root).expanduser().resolve(), tuple(classes), tuple(domains))


@lru_cache(maxsize=4)
def _load_image_folder(root: Path, classes: tuple[str, ...], domains: tuple[str, ...]) -> ImageFolderData:
    folders = domain_folders(root, domains)
    found_classes = (folder.name for domain in folders for folder in subfolders(domain))
    class_names = restrict_classes(found_classes, classes, root)
    splits = {}
    for domain in folders:
        files = ImageFiles.of(*class_image_paths(domain, class_names))
        if not len(files):
            only = f" of the classes {', '.join(class_names)}" if classes else ""
            raise DataError(f"domain folder {domain} has no .png/.jpg/.jpeg images{only}; {LAYOUT_HELP}")
        splits[domain.name] = files
    return ImageFolderData(domains=splits, class_names=class_names)


def split_train_test(split: Split, test_fraction: float, seed: int) -> tuple[Split, Split]:
    """A stratified, seeded (train, test) split of `split` for data sets without an official one."""
    labels = split.labels.numpy()
    try:
        train, test = train_test_split(
            np.arange(len(split)), test_size=test_fraction, stratify=labels, random_state=seed
        )
    except ValueError as error:
        counts = {int(label): int(count) for label, count in zip(*np.unique(labels, return_counts=True))}
        raise DataError(
            f"cannot make a stratified {test_fraction:g} test split of {len(split)} images with per-label counts "
            f"{counts} ({error}); every class needs at least 2 images"
        ) from error
    return split.subset(np.sort(train)), split.subset(np.sort(test))


def split_domains(splits: dict[str, Split], test_fraction: float, seed: int, root: Path) -> tuple[DomainData, ...]:
    """Each named split cut into a stratified train/test pair, seeded per domain; errors name the domain."""
    domains = []
    for index, (name, split) in enumerate(splits.items()):
        try:
            train, test = split_train_test(split, test_fraction, derived_seed(seed, index))
        except DataError as error:
            raise DataError(f"domain '{name}' under {root}: {error}") from error
        domains.append(DomainData(name=name, train=train, test=test))
    return tuple(domains)


def image_folder_domain_set(settings: DataSettings) -> DomainSet:
    """Every domain folder under settings.root, split by settings.test_fraction and the run seed."""
    if not settings.root:
        raise DataError(f"data.name=imagefolder needs data.root; {LAYOUT_HELP}")
    data = load_image_folder(settings.root, settings.classes)
    domains = split_domains(data.domains, settings.test_fraction, settings.seed, Path(settings.root))
    return DomainSet(domains=domains, class_names=data.class_names)
