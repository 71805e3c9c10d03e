"""Camelyon17 (WILDS layout): tumour / normal tissue patches from 5 hospitals, one domain per hospital.

`root/metadata.csv` has one row per patch with the columns patient, node, x_coord, y_coord, tumor,
center and split; the patch is
`root/patches/patient_{p:03d}_node_{n}/patch_patient_{p:03d}_node_{n}_x_{x}_y_{y}.png`. The
official split column is used (0: train, 1: validation, used here as test); a hospital with no
split-1 rows is split by data.test-fraction and the run seed. Only the metadata is read to list the
clients; each client decodes its own hospital's share of the patches.
"""

from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path

from warmfed_flwr.config import DataSettings
from warmfed_flwr.data.errors import DataError
from warmfed_flwr.data.imagefolder import check_root, split_train_test
from warmfed_flwr.data.seeding import derived_seed
from warmfed_flwr.data.types import DomainData, DomainSet, ImageFiles

CLASS_NAMES = ("normal", "tumor")
COLUMNS = ("patient", "node", "x_coord", "y_coord", "tumor", "center", "split")
TRAIN_SPLIT, TEST_SPLIT = 0, 1
HELP = (
    "download WILDS' camelyon17_v1.0 (e.g. `pip install wilds` then "
    "`wilds.get_dataset('camelyon17', root_dir=..., download=True)`) and set data.root to the folder holding "
    "metadata.csv and patches/"
)


def patch_path(root: Path, row: dict[str, str]) -> Path:
    """The patch file of one metadata row."""
    patient, node = int(row["patient"]), int(row["node"])
    x, y = int(row["x_coord"]), int(row["y_coord"])
    folder = f"patient_{patient:03d}_node_{node}"
    return root / "patches" / folder / f"patch_{folder}_x_{x}_y_{y}.png"


def read_metadata(root: Path) -> dict[int, dict[int, tuple[list[Path], list[int]]]]:
    """Per hospital (center), per official split: the patch paths and their tumour labels."""
    metadata = root / "metadata.csv"
    if not metadata.is_file():
        raise DataError(f"camelyon17: {metadata} does not exist; {HELP}")
    rows: dict[int, dict[int, tuple[list[Path], list[int]]]] = defaultdict(lambda: defaultdict(lambda: ([], [])))
    with metadata.open(newline="") as handle:
        reader = csv.DictReader(handle)
        missing = [column for column in COLUMNS if column not in (reader.fieldnames or [])]
        if missing:
            raise DataError(f"camelyon17: {metadata} lacks the column(s) {', '.join(missing)}; {HELP}")
        for number, row in enumerate(reader, start=2):
            try:
                center, split, tumor = int(row["center"]), int(row["split"]), int(row["tumor"])
                path = patch_path(root, row)
            except ValueError as error:
                raise DataError(f"camelyon17: {metadata} line {number}: {error}") from error
            if split not in (TRAIN_SPLIT, TEST_SPLIT) or tumor not in (0, 1):
                raise DataError(f"camelyon17: {metadata} line {number}: split must be 0/1 and tumor 0/1, got {row}")
            paths, labels = rows[center][split]
            paths.append(path)
            labels.append(tumor)
    if not rows:
        raise DataError(f"camelyon17: {metadata} has no rows; {HELP}")
    return rows


def camelyon17_domain_set(settings: DataSettings) -> DomainSet:
    """One domain per hospital ("hospital0".."hospital4"), labels normal (0) / tumor (1)."""
    if not settings.root:
        raise DataError(f"data.name=camelyon17 needs data.root; {HELP}")
    if settings.classes:
        raise DataError(f"data.classes is set, but camelyon17 always has the classes {', '.join(CLASS_NAMES)}")
    root = Path(settings.root).expanduser().resolve()
    check_root(root, HELP)
    domains = []
    for center, splits in sorted(read_metadata(root).items()):
        name = f"hospital{center}"
        train, test = ImageFiles.of(*splits[TRAIN_SPLIT]), ImageFiles.of(*splits[TEST_SPLIT])
        if not len(train):
            raise DataError(f"camelyon17: {name} under {root} has no training patches (split 0); {HELP}")
        if not len(test):
            try:
                train, test = split_train_test(train, settings.test_fraction, derived_seed(settings.seed, center))
            except DataError as error:
                raise DataError(f"camelyon17: {name} under {root}: {error}") from error
        domains.append(DomainData(name=name, train=train, test=test))
    return DomainSet(domains=tuple(domains), class_names=CLASS_NAMES)
