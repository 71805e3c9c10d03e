"""Snapshots: on the way through its rounds, a run records what a run stopped at an earlier round would report.

With `snapshot-rounds="1,5,20"` a 50-round fedavg-ft run also records, right after rounds 1, 5 and 20,
the results a 1-, 5- or 20-round run would end with: each client's accuracy of that round's global
model, the personalization of that model (fedavg-ft: fine-tuning; warmfed and fgl: DSD, where round 0
is the one-shot model after the warm start), the bytes so far and the elapsed seconds. Client seeds do
not depend on the number of rounds and the replies are aggregated in partition order, so these are
the shorter run's numbers (tests/test_snapshots.py checks that they are equal). The benchmark takes
its 1-, 5- and 20-round cells from the 50-round runs this way. A snapshot's personalization leaves the
run's own numbers (accuracies, bytes) as they were.
"""

from __future__ import annotations

import time
from typing import Callable, Iterable

from flwr.app import ArrayRecord

from warmfed_flwr.logs import logger
from warmfed_flwr.run.results import RunRecorder

# Personalizes a global model as the method's last phase would, recording into the clients' numbers;
# the string names the phase in failure records.
Personalization = Callable[[ArrayRecord, str], None]


class SnapshotTaker:
    """Called with each round's global model; records a snapshot at the rounds asked for."""

    def __init__(self, recorder: RunRecorder, rounds: Iterable[int], personalization: Personalization | None) -> None:
        self.recorder = recorder
        self.rounds = frozenset(rounds)
        self.personalization = personalization

    def __call__(self, server_round: int, arrays: ArrayRecord) -> None:
        """Record the snapshot of `server_round` (unless it is not asked for, or the run resumed holds it)."""
        if server_round not in self.rounds or self.recorder.has_snapshot(server_round):
            return
        before = self.recorder.client_numbers()
        start = time.perf_counter()
        if self.personalization is not None:
            self.personalization(arrays, f"snapshot-{server_round}")
        self.recorder.add_snapshot(server_round, time.perf_counter() - start)
        self.recorder.restore_client_numbers(before)
        logger.info("[snapshot] recorded the results of a run stopped after round %d", server_round)
