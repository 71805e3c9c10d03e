"""DomainNet: 6 domains, `root/<domain>/<class>/*`, with the official `<domain>_train.txt` /
`<domain>_test.txt` splits (lines "clipart/bird/clipart_001_000001.jpg 12") when present.

Only a class subset is loaded: data.classes, or by default FedBN's ten classes. A domain without
official split files is split by data.test-fraction and the run seed.
"""

from __future__ import annotations

from pathlib import Path

from warmfed_flwr.config import DataSettings
from warmfed_flwr.data.errors import DataError
from warmfed_flwr.data.imagefolder import class_image_paths, domain_folders, split_train_test
from warmfed_flwr.data.seeding import derived_seed
from warmfed_flwr.data.types import DomainData, DomainSet, ImageFiles

DOMAINS = ("clipart", "infograph", "painting", "quickdraw", "real", "sketch")
FEDBN_CLASSES = (
    "bird",
    "feather",
    "headphones",
    "ice_cream",
    "teapot",
    "tiger",
    "whale",
    "windmill",
    "wine_glass",
    "zebra",
)
HELP = (
    "download DomainNet (http://ai.bu.edu/M3SDA/: the six domain zips and their *_train.txt / *_test.txt) and "
    "unpack it so that <root>/clipart/bird/*.jpg ... <root>/sketch/zebra/*.jpg exist, then set data.root=<root>"
)


def official_split_paths(list_file: Path, root: Path, class_names: tuple[str, ...]) -> tuple[list[Path], list[int]]:
    """The image paths of `class_names` listed in an official split file, with labels indexing `class_names`.

    The file's own label numbers refer to all 345 classes; the class is read from the path instead.
    """
    label_of = {name: label for label, name in enumerate(class_names)}
    paths, labels = [], []
    for number, line in enumerate(list_file.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.rsplit(maxsplit=1)
        if len(fields) != 2:
            raise DataError(f"{list_file} line {number}: expected '<path> <label>', got {line!r}")
        relative = Path(fields[0])
        if relative.parent.name in label_of:
            paths.append(root / relative)
            labels.append(label_of[relative.parent.name])
    return paths, labels


def load_domain(root: Path, domain: str, class_names: tuple[str, ...], test_fraction: float, seed: int) -> DomainData:
    """One domain's train and test files (the official split if both list files exist, else a seeded one)."""
    list_files = [root / f"{domain}_{part}.txt" for part in ("train", "test")]
    present = [path.is_file() for path in list_files]
    if any(present) and not all(present):
        missing = list_files[present.index(False)]
        raise DataError(f"domainnet: {missing} is missing although its train/test partner exists; {HELP}")
    if all(present):
        train = ImageFiles.of(*official_split_paths(list_files[0], root, class_names))
        test = ImageFiles.of(*official_split_paths(list_files[1], root, class_names))
    else:
        whole = ImageFiles.of(*class_image_paths(root / domain, class_names))
        if not len(whole):
            raise DataError(f"domainnet: {root / domain} has no images of {', '.join(class_names)}; {HELP}")
        train, test = split_train_test(whole, test_fraction, seed)
    for part, split in (("train", train), ("test", test)):
        if not len(split):
            raise DataError(
                f"domainnet: domain '{domain}' under {root} has no {part} images of the classes "
                f"{', '.join(class_names)}; {HELP}"
            )
    return DomainData(name=domain, train=train, test=test)


def domainnet_domain_set(settings: DataSettings) -> DomainSet:
    """The six DomainNet domains restricted to data.classes (default: FedBN's ten), in the order of DOMAINS."""
    if not settings.root:
        raise DataError(f"data.name=domainnet needs data.root; {HELP}")
    root = Path(settings.root).expanduser().resolve()
    domain_folders(root, DOMAINS, HELP)
    class_names = tuple(sorted(set(settings.classes or FEDBN_CLASSES)))
    domains = tuple(
        load_domain(root, domain, class_names, settings.test_fraction, derived_seed(settings.seed, index))
        for index, domain in enumerate(DOMAINS)
    )
    return DomainSet(domains=domains, class_names=class_names)

