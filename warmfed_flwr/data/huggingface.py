"""Hugging Face data sets by id (or a local folder of data files), read offline from the local cache.

The data set needs an image column, an integer or ClassLabel `label` column and a `domain`
column; each distinct domain value becomes a domain (flwr-datasets' NaturalIdPartitioner). A
`test` split is used when present, else each domain is split by data.test-fraction and the run
seed. Set HF_HUB_OFFLINE=1 so that nothing tries the network.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import datasets
from flwr_datasets.partitioner import NaturalIdPartitioner

from warmfed_flwr.config import DataSettings
from warmfed_flwr.data.errors import DataError
from warmfed_flwr.data.imagefolder import split_domains
from warmfed_flwr.data.types import DomainData, DomainSet, ImageFiles

DOMAIN_COLUMN, LABEL_COLUMN = "domain", "label"
HELP = (
    "set data.root to a Hugging Face data set id already in the local cache (download it once elsewhere with "
    "`datasets.load_dataset(id)`) or to a local folder of data files, with an image column, an integer or "
    "ClassLabel 'label' column and a 'domain' column; set HF_HUB_OFFLINE=1 to skip network retries"
)


def open_dataset(dataset_id: str, cache_dir: str | None = None) -> datasets.DatasetDict:
    """`datasets.load_dataset(dataset_id)` with its errors turned into a DataError naming the id."""
    try:
        loaded = datasets.load_dataset(dataset_id, cache_dir=cache_dir)
    except (OSError, ConnectionError, ValueError) as error:
        raise DataError(f"huggingface: cannot load {dataset_id!r} ({error}); {HELP}") from error
    if "train" not in loaded:
        raise DataError(f"huggingface: {dataset_id!r} has no 'train' split (it has {', '.join(loaded)}); {HELP}")
    return loaded


def check_columns(split: datasets.Dataset, dataset_id: str) -> str:
    """Check the domain and label columns are there; return the name of the one image column."""
    columns = [name for name, feature in split.features.items() if isinstance(feature, datasets.Image)]
    if len(columns) != 1:
        found = ", ".join(columns) or "none"
        raise DataError(f"huggingface: {dataset_id!r} needs exactly one image column, found {found}; {HELP}")
    missing = [name for name in (DOMAIN_COLUMN, LABEL_COLUMN) if name not in split.features]
    if missing:
        raise DataError(f"huggingface: {dataset_id!r} lacks the column(s) {', '.join(missing)}; {HELP}")
    return columns[0]


def class_names_of(data: datasets.DatasetDict, dataset_id: str) -> tuple[str, ...]:
    """ClassLabel names, or "0".."max" for a plain integer label column."""
    feature = data["train"].features[LABEL_COLUMN]
    if isinstance(feature, datasets.ClassLabel):
        return tuple(feature.names)
    if isinstance(feature, datasets.Value) and feature.dtype.startswith("int"):
        highest = max(max(split[LABEL_COLUMN]) for split in data.values())
        return tuple(str(label) for label in range(highest + 1))
    raise DataError(
        f"huggingface: {dataset_id!r} column 'label' is {feature}, not integers; encode it first "
        "(`dataset.class_encode_column('label')`)"
    )


@dataclass(frozen=True, eq=False)
class DatasetRow:
    """One row's encoded image in an Arrow-backed data set, read from the (memory-mapped) table only when opened."""

    dataset: datasets.Dataset
    column: str
    row: int
    name: str

    def open(self) -> Path | BinaryIO:
        item = self.dataset[self.row][self.column]
        return io.BytesIO(item["bytes"]) if item["bytes"] is not None else Path(item["path"])


def encoded_rows(split: datasets.Dataset, column: str, where: str) -> ImageFiles:
    """The rows of `split` as encoded images with their labels; no image is decoded."""
    encoded = split.cast_column(column, datasets.Image(decode=False))
    rows = [DatasetRow(encoded, column, row, f"{where} row {row}") for row in range(len(encoded))]
    return ImageFiles.of(rows, [int(label) for label in encoded[LABEL_COLUMN]])


def split_by_domain(split: datasets.Dataset, column: str, dataset_id: str, split_name: str) -> dict[str, ImageFiles]:
    """Each distinct value of the domain column with its rows, sorted by domain name (as the partitioner sorts them)."""
    partitioner = NaturalIdPartitioner(partition_by=DOMAIN_COLUMN)
    partitioner.dataset = split
    domains = {}
    for partition_id in range(partitioner.num_partitions):
        name = str(partitioner.partition_id_to_natural_id[partition_id])
        where = f"{dataset_id}[{split_name}] domain '{name}'"
        domains[name] = encoded_rows(partitioner.load_partition(partition_id), column, where)
    return domains


def huggingface_domain_set(settings: DataSettings, cache_dir: str | None = None) -> DomainSet:
    """One domain per value of the `domain` column of data set settings.root."""
    if not settings.root:
        raise DataError(f"data.name=huggingface needs data.root; {HELP}")
    if settings.classes:
        raise DataError("data.classes is set, but huggingface data sets always use all their labels")
    data = open_dataset(settings.root, cache_dir)
    column = check_columns(data["train"], settings.root)
    class_names = class_names_of(data, settings.root)
    train = split_by_domain(data["train"], column, settings.root, "train")
    if "test" not in data:
        domains = split_domains(train, settings.test_fraction, settings.seed, Path(settings.root))
    else:
        test = split_by_domain(data["test"], column, settings.root, "test")
        if set(test) != set(train):
            raise DataError(
                f"huggingface: {settings.root!r} train domains {sorted(train)} differ from test domains {sorted(test)}"
            )
        domains = tuple(DomainData(name=name, train=train[name], test=test[name]) for name in sorted(train))
    for domain in domains:
        if not len(domain.train) or not len(domain.test):
            raise DataError(
                f"huggingface: {settings.root!r} domain '{domain.name}' has no train or test images"
            )
    return DomainSet(domains=domains, class_names=class_names)
