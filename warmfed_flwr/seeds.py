"""The one formula for per-client seeds: every random draw made for a client follows from the run seed,
the client's partition and what the draw is for."""

from __future__ import annotations

# What a draw is for (a client's FedAvg round r uses ROUND + r).
LORA_FIT = 1
LOCAL_TRAINING = 2
DSD = 3
VALIDATION = 4  # the validation share a client holds out of its training images for personalization
GENERATION = 7  # the server's generation of the client's synthetic share
ROUND = 100
PERSONAL_ROUND = 50_000  # Ditto's personal model in round r uses PERSONAL_ROUND + r


def client_seed(run_seed: int, partition_id: int, purpose: int) -> int:
    """A per-client, per-purpose seed derived from the run seed."""
    return run_seed * 1_000_003 + partition_id * 101 + purpose
