"""Checks that a broken phase cannot pass: accuracies that are what they claim to be."""

from __future__ import annotations

from typing import Any, Iterable


def is_share(value: Any, total: int) -> bool:
    """True when `value` is k / `total` for a whole k in 0..total: an accuracy measured on `total` images."""
    if not isinstance(value, float) or total < 1 or not 0.0 <= value <= 1.0:
        return False
    correct = value * total
    return abs(correct - round(correct)) < 1e-3


def assert_accuracies(clients: list[dict[str, Any]], partitions: Iterable[int], keys: Iterable[str]) -> None:
    """Exactly `partitions` are in `clients`, and each one's `keys` are accuracies on its own test split."""
    assert sorted(c["partition_id"] for c in clients) == sorted(partitions)
    for client in clients:
        for key in keys:
            assert is_share(client[key], client["num_test"]), (
                f"partition {client['partition_id']}: {key}={client[key]!r} is not an accuracy on "
                f"{client['num_test']} test images"
            )
