"""Domains split into clients: the shards add up, never overlap, and follow the chosen partitioning."""

from __future__ import annotations

import numpy as np
import pytest

from warmfed_flwr.config import Settings
from warmfed_flwr.data import DataError, load_client_data, load_domain_set, num_clients
from warmfed_flwr.data.partition import Sharding, client_slots, shard_indices, shard_train_test

LABELS = np.repeat(np.arange(10), 30)  # 300 images, 30 per class


def data_settings(**overrides: object):
    return Settings.from_run_config({f"data.{key.replace('_', '-')}": value for key, value in overrides.items()}).data


def assert_disjoint_cover(shards: list[np.ndarray], size: int) -> None:
    joined = np.concatenate(shards)
    assert joined.size == size, "shards overlap or miss images"
    assert np.array_equal(np.sort(joined), np.arange(size))


def test_client_slots_number_clients_domain_by_domain() -> None:
    one_each = client_slots(4, 4)
    assert [(s.domains, s.shard, s.shards) for s in one_each] == [((d,), 0, 1) for d in range(4)]
    sixty = client_slots(4, 60)
    assert (sixty[14].domains, sixty[14].shard, sixty[15].domains, sixty[15].shard) == ((0,), 14, (1,), 0)
    uneven = client_slots(4, 6)  # domains shared out as evenly as possible: 2, 2, 1, 1
    assert [(s.domains[0], s.shard, s.shards) for s in uneven] == [(0, 0, 2), (0, 1, 2), (1, 0, 2), (1, 1, 2),
                                                                  (2, 0, 1), (3, 0, 1)]
    assert [s.domains for s in client_slots(4, 2)] == [(0, 1), (2, 3)]  # fewer clients than domains
    assert [s.domains for s in client_slots(4, 3)] == [(0,), (1,), (2, 3)]


def test_iid_shards_are_equal_disjoint_and_deterministic() -> None:
    shards = shard_indices(LABELS, Sharding(4, "iid", 0.5, seed=1))
    assert_disjoint_cover(shards, LABELS.size)
    assert [len(shard) for shard in shards] == [75] * 4
    assert all(len(np.unique(LABELS[shard])) == 10 for shard in shards)  # shuffled, not cut by class
    again = shard_indices(LABELS, Sharding(4, "iid", 0.5, seed=1))
    other = shard_indices(LABELS, Sharding(4, "iid", 0.5, seed=2))
    assert all(np.array_equal(a, b) for a, b in zip(shards, again))
    assert not all(np.array_equal(a, b) for a, b in zip(shards, other))


def test_dirichlet_shards_are_disjoint_skewed_and_respect_the_minimum_size() -> None:
    shards = shard_indices(LABELS, Sharding(4, "dirichlet", 0.3, seed=0), min_shard_size=20)
    assert_disjoint_cover(shards, LABELS.size)
    assert min(len(shard) for shard in shards) >= 20
    iid_spread = max(np.bincount(LABELS[s], minlength=10).std() for s in shard_indices(LABELS, Sharding(4, "iid", 0.3, 0)))
    dirichlet_spread = max(np.bincount(LABELS[s], minlength=10).std() for s in shards)
    assert dirichlet_spread > 2 * iid_spread  # label skew


def test_more_shards_than_images_names_the_domain() -> None:
    with pytest.raises(DataError, match="domain 'sketch'.*5 clients.*only 3 images"):
        shard_indices(np.array([0, 1, 2]), Sharding(5, "iid", 0.5, seed=0), domain="sketch")


def test_unsatisfiable_dirichlet_minimum_is_a_clear_data_error() -> None:
    with pytest.warns(UserWarning, match="min_partition_size"), pytest.raises(DataError, match="domain 'clean'.*alpha"):
        shard_indices(LABELS, Sharding(10, "dirichlet", 0.5, seed=0), domain="clean", min_shard_size=30)


def test_dirichlet_test_shards_follow_each_clients_train_labels() -> None:
    test_labels = np.repeat(np.arange(10), 10)
    shards = shard_train_test(LABELS, test_labels, Sharding(6, "dirichlet", 0.2, seed=3), domain="d", min_train_size=5)
    assert_disjoint_cover([train for train, _ in shards], LABELS.size)
    assert_disjoint_cover([test for _, test in shards], test_labels.size)
    for train, test in shards:
        assert set(test_labels[test]) <= set(LABELS[train])


@pytest.mark.parametrize(
    ("clients_per_domain", "partitioning"), [(1, "iid"), (15, "iid"), (15, "dirichlet")]
)
def test_digits_clients_add_up_to_each_domain(clients_per_domain: int, partitioning: str) -> None:
    settings = data_settings(clients_per_domain=clients_per_domain, partitioning=partitioning, min_train_images=5)
    clients = [load_client_data(settings, pid, num_clients(settings)) for pid in range(num_clients(settings))]
    assert num_clients(settings) == len(clients) == 4 * clients_per_domain
    for domain in load_domain_set(settings).domains:
        own = [client for client in clients if client.domain == domain.name]
        assert len(own) == clients_per_domain
        assert sum(len(client.train) for client in own) == len(domain.train)
        assert sum(len(client.test) for client in own) == len(domain.test)
        train_images = np.concatenate([client.train.images.flatten(1).numpy() for client in own])
        assert len(np.unique(train_images, axis=0)) == len(domain.train)  # no image owned twice
        assert all(client.class_names == tuple("0123456789") for client in own)
    assert [client.partition_id for client in clients] == list(range(len(clients)))


def test_too_few_training_images_names_the_client_and_domain() -> None:
    settings = data_settings(clients_per_domain=15, min_train_images=40)
    with pytest.raises(DataError, match=r"client 16 \(domain 'inverted', shard 1 of 15\).*18 training images"):
        load_client_data(settings, 16)


def test_unknown_client_id_is_refused() -> None:
    with pytest.raises(DataError, match="client 4 does not exist.*0..3"):
        load_client_data(data_settings(), 4)
