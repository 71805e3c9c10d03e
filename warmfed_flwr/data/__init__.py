"""The data sets WarmFed runs on, behind one contract: a number of clients, and per client its
own train and test split of one domain.

Client ids run domain by domain: with K clients per domain, clients 0..K-1 share the first
domain (see `partition.client_slots`). A data set's layout (its files and labels, or the
embedded digits) is cached per process, so every client and the server can count and partition
clients freely; pixels of image files are decoded only by `load_client_data`, for one client.
"""

from __future__ import annotations

import importlib
from functools import lru_cache
from typing import TYPE_CHECKING, Callable

import numpy as np
import torch

from warmfed_flwr.config import NODE_LOCAL, DataSettings
from warmfed_flwr.data.errors import DataError
from warmfed_flwr.data.images import decoded
from warmfed_flwr.data.seeding import derived_seed
from warmfed_flwr.data.types import ClientData, DomainData, DomainSet, ImageSplit

if TYPE_CHECKING:
    from warmfed_flwr.data.partition import ClientSlot

__all__ = [
    "ClientData",
    "DataError",
    "DomainData",
    "DomainSet",
    "ImageSplit",
    "balanced_domain_test",
    "domain_names",
    "load_client_data",
    "load_domain_set",
    "num_clients",
    "pixel_dtype",
]

# data.name -> "module:function" building its DomainSet; imported on first use, so that importing
# warmfed_flwr.data (e.g. for its types) pulls in neither scikit-learn nor the datasets library.
DOMAIN_SET_LOADERS: dict[str, str] = {
    "digits-domains": "warmfed_flwr.data.digits_domains:digits_domain_set",
    "digits-far": "warmfed_flwr.data.digits_domains:digits_domain_set",
    "imagefolder": "warmfed_flwr.data.imagefolder:image_folder_domain_set",
    "office-caltech10": "warmfed_flwr.data.office_caltech10:office_caltech10_domain_set",
    "domainnet": "warmfed_flwr.data.domainnet:domainnet_domain_set",
    "camelyon17": "warmfed_flwr.data.camelyon17:camelyon17_domain_set",
    "huggingface": "warmfed_flwr.data.huggingface:huggingface_domain_set",
}


# Data sets made in memory as float images; every other data set is 8-bit image files.
FLOAT_DATA_SETS = ("digits-domains", "digits-far")


@lru_cache(maxsize=4)
def load_domain_set(settings: DataSettings) -> DomainSet:
    """All domains of the configured data set with their train/test splits (cached; read-only).

    For data sets on disk the splits are file lists with labels: nothing is decoded here.
    """
    if settings.name == NODE_LOCAL:
        raise DataError(
            "data.name=node-local: each SuperNode reads its own folder (its node config's data-root), so there is no "
            "shared data set to load or count here; deploy on SuperNodes (docs/deployment.md), "
            "or simulate with a shared data set"
        )
    target = DOMAIN_SET_LOADERS.get(settings.name)
    if target is None:
        raise DataError(f"data.name={settings.name!r} has no loader; available: {', '.join(DOMAIN_SET_LOADERS)}")
    module, function = target.split(":")
    loader: Callable[[DataSettings], DomainSet] = getattr(importlib.import_module(module), function)
    return loader(settings)


def domain_names(settings: DataSettings) -> tuple[str, ...]:
    """The domain names, in client order."""
    return tuple(domain.name for domain in load_domain_set(settings).domains)


def pixel_dtype(settings: DataSettings) -> torch.dtype:
    """How the data set's images, and a synthetic pool standing in for them, are kept in memory.

    uint8 for image files (all an 8-bit file holds, a quarter of float32's memory); float32 for
    the embedded digits, whose styled images are made as floats.
    """
    return torch.float32 if settings.name in FLOAT_DATA_SETS else torch.uint8


def num_clients(settings: DataSettings, num_partitions: int | None = None) -> int:
    """How many clients the run has: domains x data.clients-per-domain, or with "auto" the federation's size
    (`num_partitions`, the SuperNodes' count) when it is known and one client per domain when not."""
    if settings.clients_per_domain is not None:
        return len(domain_names(settings)) * settings.clients_per_domain
    return num_partitions or len(domain_names(settings))


@lru_cache(maxsize=64)
def _domain_shards(settings: DataSettings, domain_index: int, shards: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per client of the domain (`shards` of them), its positions in the domain's train and test split."""
    from warmfed_flwr.data.partition import Sharding, shard_train_test  # imported here: it needs `datasets`

    domain = load_domain_set(settings).domains[domain_index]
    sharding = Sharding(shards, settings.partitioning, settings.dirichlet_alpha, derived_seed(settings.seed, domain_index))
    return shard_train_test(
        domain.train.labels.numpy(),
        domain.test.labels.numpy(),
        sharding,
        domain=domain.name,
        min_train_size=settings.min_train_images,
    )


def client_slot(settings: DataSettings, partition_id: int, num_partitions: int | None = None) -> ClientSlot:
    """Which domains, and which shard of them, client `partition_id` holds (see `partition.client_slots`)."""
    from warmfed_flwr.data.partition import client_slots

    total = num_clients(settings, num_partitions)
    if not 0 <= partition_id < total:
        raise DataError(f"client {partition_id} does not exist: data set {settings.name!r} has clients 0..{total - 1}")
    return client_slots(len(domain_names(settings)), total)[partition_id]


def concatenated(splits: list[ImageSplit]) -> ImageSplit:
    """One split of several (the split itself when there is one)."""
    if len(splits) == 1:
        return splits[0]
    return ImageSplit(torch.cat([s.images for s in splits]), torch.cat([s.labels for s in splits]))


def load_client_data(settings: DataSettings, partition_id: int, num_partitions: int | None = None) -> ClientData:
    """Client `partition_id`'s shard of its domain's train and test split, decoded (only that shard), with a line
    per split that had unreadable files (`ClientData.unreadable`: the client reports them, once per node).

    With data.clients-per-domain "auto" the split follows `num_partitions`, the federation's size
    (its SuperNodes' `num-partitions`). Raises DataError if the id is out of range, or the client
    gets fewer than settings.min_train_images training images or no test image.
    """
    slot = client_slot(settings, partition_id, num_partitions)
    domain_set = load_domain_set(settings)
    names = "+".join(domain_set.domains[index].name for index in slot.domains)
    where = f"client {partition_id} (domain '{names}', shard {slot.shard} of {slot.shards})"
    trains, tests, unreadable = [], [], []
    for index in slot.domains:
        domain = domain_set.domains[index]
        train_positions, test_positions = _domain_shards(settings, index, slot.shards)[slot.shard]
        trains.append(decoded(domain.train.subset(train_positions), settings.image_size, f"{where}, train split",
                              unreadable))
        tests.append(decoded(domain.test.subset(test_positions), settings.image_size, f"{where}, test split",
                             unreadable))
    client = ClientData(
        partition_id=partition_id, domain=names, train=concatenated(trains), test=concatenated(tests),
        class_names=domain_set.class_names, unreadable=tuple(unreadable),
    )
    if len(client.train) < settings.min_train_images:
        raise DataError(
            f"{where} has {len(client.train)} training images, fewer than data.min-train-images="
            f"{settings.min_train_images}; lower data.clients-per-domain or data.min-train-images"
        )
    if len(client.test) == 0:
        raise DataError(
            f"{where} has no test images; lower data.clients-per-domain, raise data.test-fraction "
            "or data.dirichlet-alpha"
        )
    return client


def balanced_domain_test(settings: DataSettings, partition_id: int, num_partitions: int | None = None) -> ImageSplit:
    """A label-balanced test split of client `partition_id`'s domain(s): the same number of test images of each class.

    Drawn (seeded) from the whole domain's test split, the other clients' shares included, as many per
    class as the rarest class has; for judging a personalized model beyond its own, possibly
    label-skewed, test split.
    """
    slot = client_slot(settings, partition_id, num_partitions)
    domain_set = load_domain_set(settings)
    rng = np.random.default_rng(derived_seed(settings.seed, partition_id, len(domain_set.domains)))
    splits = []
    for index in slot.domains:
        domain = domain_set.domains[index]
        labels = domain.test.labels.numpy()
        per_class = min(int((labels == label).sum()) for label in np.unique(labels))
        positions = np.sort(np.concatenate(
            [rng.choice(np.flatnonzero(labels == label), per_class, replace=False) for label in np.unique(labels)]
        ))
        splits.append(decoded(domain.test.subset(positions), settings.image_size, f"domain '{domain.name}', test split"))
    return concatenated(splits)
