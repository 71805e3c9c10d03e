"""Splitting one domain into K clients (shards) with flwr-datasets partitioners."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from datasets import Dataset
from flwr_datasets.partitioner import DirichletPartitioner, IidPartitioner, Partitioner

from warmfed_flwr.data.errors import DataError

PARTITIONINGS = ("iid", "dirichlet")


@dataclass(frozen=True)
class ClientSlot:
    """Where one client's data comes from: shard `shard` of `shards` of one domain, or whole domains."""

    domains: tuple[int, ...]
    shard: int
    shards: int


def client_slots(num_domains: int, num_clients: int) -> tuple[ClientSlot, ...]:
    """The data of each of `num_clients` clients over `num_domains` domains, numbered domain by domain.

    With at least as many clients as domains every domain is split, as evenly as the numbers allow:
    60 clients over 6 domains give 10 shards of each (clients 0-9 share domain 0), 6 over 4 give
    2, 2, 1, 1. With fewer clients than domains each client holds whole neighbouring domains: 2
    clients over 4 domains hold domains 0-1 and 2-3.
    """
    if num_domains < 1 or num_clients < 1:
        raise ValueError(f"need at least one domain and one client, got {num_domains} and {num_clients}")
    if num_clients < num_domains:
        return tuple(
            ClientSlot(tuple(range(c * num_domains // num_clients, (c + 1) * num_domains // num_clients)), 0, 1)
            for c in range(num_clients)
        )
    base, extra = divmod(num_clients, num_domains)
    shards = [base + (domain < extra) for domain in range(num_domains)]
    return tuple(ClientSlot((domain,), shard, shards[domain]) for domain in range(num_domains) for shard in range(shards[domain]))


@dataclass(frozen=True)
class Sharding:
    """How a domain is cut into clients: `num_shards` shards, `partitioning` "iid" or "dirichlet" (with
    concentration `alpha`), rows shuffled by `seed`."""

    num_shards: int
    partitioning: str
    alpha: float
    seed: int


def _partitioner(sharding: Sharding, min_shard_size: int) -> Partitioner:
    if sharding.partitioning == "iid":
        return IidPartitioner(num_partitions=sharding.num_shards)
    if sharding.partitioning == "dirichlet":
        return DirichletPartitioner(
            num_partitions=sharding.num_shards,
            partition_by="label",
            alpha=sharding.alpha,
            min_partition_size=min_shard_size,
            self_balancing=True,
            shuffle=True,
            seed=sharding.seed,
        )
    raise ValueError(
        f"unknown partitioning {sharding.partitioning!r}: expected one of {', '.join(PARTITIONINGS)}"
    )


def shard_indices(
    labels: np.ndarray, sharding: Sharding, *, domain: str = "", min_shard_size: int = 1
) -> list[np.ndarray]:
    """Split positions 0..len(labels)-1 into `sharding.num_shards` disjoint shards that cover them all.

    The rows are shuffled by `seed` first. "iid": equal contiguous shards (IidPartitioner).
    "dirichlet": each class spread over the shards by Dirichlet(alpha) proportions
    (DirichletPartitioner, self-balancing: a shard above the average size takes no more
    images), redrawn up to 10 times until every shard holds at least `min_shard_size` images.
    `domain` names the data in errors.
    """
    where = f"domain '{domain}'" if domain else "the data"
    num_shards, alpha, seed = sharding.num_shards, sharding.alpha, sharding.seed
    if num_shards < 1:
        raise DataError(f"{where}: asked for {num_shards} shards, need at least 1")
    if num_shards > len(labels):
        raise DataError(
            f"{where}: asked for {num_shards} clients but it has only {len(labels)} images; "
            "lower data.clients-per-domain"
        )
    table = Dataset.from_dict({"label": np.asarray(labels).tolist(), "position": list(range(len(labels)))})
    partitioner = _partitioner(sharding, min_shard_size)
    partitioner.dataset = table.shuffle(seed=seed)  # both partitioners cut rows in stored order
    try:
        shards = [partitioner.load_partition(shard)["position"] for shard in range(num_shards)]
    except ValueError as error:
        raise DataError(
            f"{where}: could not split {len(labels)} images into {num_shards} Dirichlet(alpha={alpha}) shards of at "
            f"least {min_shard_size} images ({error}); raise data.dirichlet-alpha, or lower data.clients-per-domain "
            "or data.min-train-images"
        ) from error
    return [np.asarray(shard, dtype=np.int64) for shard in shards]


def follow_shards(
    train_labels: np.ndarray, train_shards: list[np.ndarray], labels: np.ndarray, seed: int
) -> list[np.ndarray]:
    """Deal the positions of `labels` to the shards so each class follows its split in `train_shards`.

    Every class is shuffled and cut by the cumulative share of that class each shard holds in
    the train split (the cut DirichletPartitioner itself makes); a class absent from the train
    split is cut by the shards' overall train sizes.
    """
    rng = np.random.default_rng(seed)
    shard_of_train = np.empty(len(train_labels), dtype=np.int64)
    for shard, positions in enumerate(train_shards):
        shard_of_train[positions] = shard
    sizes = np.bincount(shard_of_train, minlength=len(train_shards))
    dealt: list[list[np.ndarray]] = [[] for _ in train_shards]
    for label in np.unique(labels):
        counts = np.bincount(shard_of_train[train_labels == label], minlength=len(train_shards))
        shares = counts / counts.sum() if counts.sum() > 0 else sizes / sizes.sum()
        positions = rng.permutation(np.flatnonzero(labels == label))
        cuts = (np.cumsum(shares) * len(positions)).round().astype(int)[:-1]
        for shard, part in enumerate(np.split(positions, cuts)):
            dealt[shard].append(part)
    return [np.sort(np.concatenate(parts)).astype(np.int64) if parts else np.empty(0, np.int64) for parts in dealt]


def shard_train_test(
    train_labels: np.ndarray, test_labels: np.ndarray, sharding: Sharding, *, domain: str, min_train_size: int = 1
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per shard, the positions it owns in a domain's train split and in its test split.

    The train split is sharded by `shard_indices` (Dirichlet shards hold >= `min_train_size`
    images). IID: the test split is cut into equal IID shards too. Dirichlet: the test split
    follows the train shards class by class, so a client is tested on the label skew it trained on.
    """
    train = shard_indices(train_labels, sharding, domain=f"{domain} (train)", min_shard_size=min_train_size)
    if sharding.partitioning == "iid":
        test = shard_indices(test_labels, sharding, domain=f"{domain} (test)")
    else:
        test = follow_shards(train_labels, train, test_labels, sharding.seed)
    return list(zip(train, test))
