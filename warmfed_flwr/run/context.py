"""What every phase of one run works with, in one object instead of five arguments."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from flwr.app import RecordDict
from flwr.serverapp import Grid

from warmfed_flwr.config import Settings
from warmfed_flwr.run.checkpoint import Checkpoint
from warmfed_flwr.run.federation import ClientInfo, ReplyLimits, send_phase
from warmfed_flwr.run.results import RunRecorder


@dataclass
class RunContext:
    """One run: the Grid to its clients (metered, retrying), its recorder and checkpoint, the clients found
    at discovery, the class list they agreed on, and the settings."""

    grid: Grid
    recorder: RunRecorder
    checkpoint: Checkpoint
    settings: Settings
    clients: list[ClientInfo]
    class_names: tuple[str, ...]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def send(
        self, phase: str, message_type: str, contents: Mapping[int, RecordDict], min_clients: int | None = None
    ) -> dict[int, RecordDict]:
        """One message per node (`contents` by node id); the good replies by node id, failures recorded.

        `min_clients` None: the run's `min-clients`; an evaluation that must not stop the run passes 0.
        """
        limits = ReplyLimits(self.settings.timeout, self.settings.min_clients if min_clients is None else min_clients)
        return send_phase(self.grid, self.recorder, phase, message_type, contents, limits)
