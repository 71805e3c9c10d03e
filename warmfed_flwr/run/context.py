"""What every phase of one run works with, in one object instead of five arguments."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Mapping

from flwr.app import RecordDict

from warmfed_flwr.config import Settings
from warmfed_flwr.run.checkpoint import Checkpoint
from warmfed_flwr.run.grid import DelegatingGrid
from warmfed_flwr.run.federation import ClientInfo, ReplyLimits, stream_phase
from warmfed_flwr.run.results import RunRecorder


@dataclass
class RunContext:
    """One run: the Grid to its clients (metered, retrying), its recorder and checkpoint, the clients found
    at discovery, the class list they agreed on, and the settings."""

    grid: DelegatingGrid
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
        return dict(stream_phase(self.grid, self.recorder, phase, message_type, contents, self._limits(min_clients)))

    def stream(
        self, phase: str, message_type: str, contents: Mapping[int, RecordDict]
    ) -> Iterator[tuple[int, RecordDict]]:
        """As `send`, but each good reply (node id, content) as it arrives, so that they need not all be held."""
        return stream_phase(self.grid, self.recorder, phase, message_type, contents, self._limits(None))

    def _limits(self, min_clients: int | None) -> ReplyLimits:
        return ReplyLimits(self.settings.timeout, self.settings.min_clients if min_clients is None else min_clients)
