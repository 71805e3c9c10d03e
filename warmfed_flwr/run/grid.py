"""The Grid the server talks through: it meters training bytes per client and asks a client lost to the
infrastructure again.

A reply lost to the infrastructure (the Ray worker running the client died, the SuperNode went
offline, a message or reply went missing) is not the client's fault: `MeteredGrid` sends the same
message again, up to `retries` times, giving an offline SuperNode `retry-wait` seconds to come back
first, and records each retry.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Iterable, Iterator

from flwr.app import ConfigRecord, Message
from flwr.common.constant import ErrorCode
from flwr.serverapp import Grid

from warmfed_flwr.logs import logger
from warmfed_flwr.run.results import RunRecorder
from warmfed_flwr.run.transport import content_bytes
from warmfed_flwr.runtime.placement import take_placement

# Error codes of replies the infrastructure produced, not the ClientApp: such a client is asked again.
INFRASTRUCTURE_ERRORS = {
    ErrorCode.UNKNOWN: "worker failed",  # simulation: e.g. the Ray worker running the client died
    ErrorCode.MESSAGE_UNAVAILABLE: "message unavailable",
    ErrorCode.REPLY_MESSAGE_UNAVAILABLE: "reply unavailable",
    ErrorCode.NODE_UNAVAILABLE: "SuperNode unavailable",
    ErrorCode.CLIENT_APP_CRASHED: "ClientApp process crashed",
}


def infrastructure_fault(reply: Message) -> str | None:
    """What went wrong, when `reply` is an error the infrastructure produced; None for good replies and app errors."""
    if not reply.has_error() or reply.error.code not in INFRASTRUCTURE_ERRORS:
        return None
    return f"{INFRASTRUCTURE_ERRORS[reply.error.code]}: {reply.error.reason[:200]}"


class DelegatingGrid(Grid):
    """A Grid that passes every call on to `grid`: the base of the Grids that watch or change a run's messages."""

    def __init__(self, grid: Grid) -> None:
        self._grid = grid

    def set_run(self, run):  # type: ignore[no-untyped-def]  # signature fixed by Grid
        self._grid.set_run(run)

    @property
    def run(self):  # type: ignore[no-untyped-def]
        return self._grid.run

    def create_message(self, content, message_type, dst_node_id, group_id, ttl=None):  # type: ignore[no-untyped-def]
        return self._grid.create_message(content, message_type, dst_node_id, group_id, ttl)

    def get_node_ids(self) -> Iterable[int]:
        return self._grid.get_node_ids()

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        return self._grid.push_messages(messages)

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return self._grid.pull_messages(message_ids)

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        return self._grid.send_and_receive(messages, timeout=timeout)

    def stream(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterator[Message]:
        """The replies to `messages`; this base Grid yields them once all are in (see `MeteredGrid.stream`)."""
        yield from self.send_and_receive(messages, timeout=timeout)


class MeteredGrid(DelegatingGrid):
    """A Grid that meters training bytes per client and asks clients lost to infrastructure faults again.

    Only `train.*` messages count (LoRA upload, rounds, DSD, local training): discovery and
    evaluation messages exist to measure the run and would otherwise make a method's cost depend
    on how often it is evaluated. A message sent again counts again.

    `stream` (which `send_and_receive`, what Flower's strategies use, collects) resends a message
    whose reply is an infrastructure error (`INFRASTRUCTURE_ERRORS`), unchanged, up to `retries`
    times; an offline SuperNode is first given `retry_wait` seconds to come back online. Each retry
    is recorded (`RunRecorder.add_retry`); the caller sees only the last attempt's reply.

    Records given to `send_with_every_message` (the agreed class list of a node-local run) are added
    to every message sent from then on. Where each reply was made (runtime/placement.py) is taken out of it
    and recorded before its bytes are counted.
    """

    def __init__(self, grid: Grid, recorder: RunRecorder, retries: int = 0, retry_wait: float = 60.0) -> None:
        super().__init__(grid)
        self._recorder = recorder
        self._retries = retries
        self._retry_wait = retry_wait
        self._shared: dict[str, ConfigRecord] = {}

    def send_with_every_message(self, name: str, record: ConfigRecord) -> None:
        """Add `record`, as `name`, to every message sent from now on."""
        self._shared[name] = record

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        messages = self._with_shared(messages)
        self._count_down(messages)
        return self._grid.push_messages(messages)

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        replies = list(self._grid.pull_messages(message_ids))
        self._take_in(replies)
        return replies

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        return list(self.stream(messages, timeout=timeout))

    def stream(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterator[Message]:
        """Send `messages` and yield each reply as it arrives, so that the caller need not hold them all.

        A reply that is an infrastructure error is not yielded while retries are left: its message is sent again
        and waited for with a `timeout` of its own, at once, or, when its SuperNode went offline, as soon as the
        SuperNode is back within `retry-wait` seconds (the other messages are pulled meanwhile: a second SuperNode
        that fails and comes back in that time is not missed). A message with no reply when its timeout passes
        yields nothing. Each yielded reply answers the caller's message, whichever attempt it came from. Replies
        are pulled as often as the wrapped Grid pulls them itself (Flower's in-memory Grid every 0.1 s, otherwise
        every 3 s).
        """
        messages = self._with_shared(messages)
        self._count_down(messages)
        stored = set(self._grid.push_messages(messages))  # a message the Grid refused gets no reply
        waiting = {msg.metadata.message_id: Attempt(msg, msg.metadata.message_id, 1, deadline(timeout))
                   for msg in messages if msg.metadata.message_id in stored}
        offline: list[tuple[Attempt, Message, str, float]] = []  # attempt, its error reply, fault, when to give up
        poll_seconds = float(getattr(self._grid, "pull_interval", 3.0))
        while waiting or offline:
            pulled_at = time.monotonic()  # a reply stored by then is in this pull, however long the caller takes
            for reply in self._grid.pull_messages(list(waiting)) if waiting else []:
                attempt = waiting.pop(reply.metadata.reply_to_message_id)
                fault = infrastructure_fault(reply)
                if fault is not None and attempt.number <= self._retries:
                    if fault.startswith(INFRASTRUCTURE_ERRORS[ErrorCode.NODE_UNAVAILABLE]):
                        offline.append((attempt, reply, fault, time.monotonic() + self._retry_wait))
                        continue
                    if self._send_again(attempt, fault, timeout, waiting):
                        continue
                yield self._answer(reply, attempt)
            if offline:
                online, still_offline = set(self._grid.get_node_ids()), []
                for attempt, reply, fault, give_up in offline:
                    node_id = attempt.message.metadata.dst_node_id
                    if node_id in online and self._send_again(attempt, fault, timeout, waiting):
                        continue
                    if node_id not in online and time.monotonic() < give_up:
                        still_offline.append((attempt, reply, fault, give_up))
                        continue
                    if node_id not in online:
                        logger.warning("[retry] node %d did not come back online; not asked again", node_id)
                    yield self._answer(reply, attempt)
                offline = still_offline
            waiting = {msg_id: a for msg_id, a in waiting.items() if a.deadline is None or a.deadline > pulled_at}
            if waiting or offline:
                time.sleep(poll_seconds)

    def _answer(self, reply: Message, attempt: Attempt) -> Message:
        """`reply` as the answer to the caller's message, its placement and bytes recorded."""
        answers(reply, attempt.first_id)  # the last attempt's reply, an error if it is one
        self._take_in([reply])
        return reply

    def _send_again(self, attempt: Attempt, fault: str, timeout: float | None, waiting: dict[str, Attempt]) -> bool:
        """Send `attempt`'s message once more, recorded as a retry, and wait for it in `waiting`; False if the Grid
        refused it."""
        original = attempt.message
        node_id = original.metadata.dst_node_id
        self._recorder.add_retry(node_id, original.metadata.message_type, attempt.number, fault)
        client = self._recorder.client_of_node(node_id)
        who = f"partition {client.partition_id}" if client is not None else f"node {node_id}"
        logger.warning("[retry] %s lost to the infrastructure (%s); asking again (%d of %d)",
                       who, fault.split(":")[0], attempt.number, self._retries)
        metadata = original.metadata
        again = Message(content=original.content, dst_node_id=node_id, message_type=metadata.message_type,
                        group_id=metadata.group_id, ttl=metadata.ttl)
        self._count_down([again])
        stored = set(self._grid.push_messages([again]))  # pushing sets the message's id
        if again.metadata.message_id not in stored:
            return False
        waiting[again.metadata.message_id] = Attempt(again, attempt.first_id, attempt.number + 1, deadline(timeout))
        return True

    def _with_shared(self, messages: Iterable[Message]) -> list[Message]:
        messages = list(messages)
        for msg in messages:
            for name, record in self._shared.items():
                msg.content[name] = record
        return messages

    def _count_down(self, messages: list[Message]) -> None:
        for msg in messages:
            client = self._recorder.client_of_node(msg.metadata.dst_node_id)
            if client is not None and is_training(msg):
                client.bytes_down += content_bytes(msg.content)

    def _take_in(self, replies: list[Message]) -> None:
        """Record where each reply was made (taking that record out), then count its training bytes."""
        for reply in replies:
            place = take_placement(reply)
            if place is not None:
                self._recorder.add_placement(reply.metadata.src_node_id, place)
            client = self._recorder.client_of_node(reply.metadata.src_node_id)
            if client is not None and is_training(reply) and not reply.has_error():
                client.bytes_up += content_bytes(reply.content)


@dataclass(frozen=True)
class Attempt:
    """A message sent, the id of the caller's message it stands for, which attempt it is (1: the first send) and
    when waiting for its reply ends (None: never)."""

    message: Message
    first_id: str
    number: int
    deadline: float | None


def deadline(timeout: float | None) -> float | None:
    return None if timeout is None else time.monotonic() + timeout


def answers(reply: Message, message_id: str) -> None:
    """Make `reply` answer message `message_id` (a retried message's reply answers the caller's first one).

    Flower's own Grid sets the field the same way: Metadata has no setter for it.
    """
    reply.metadata.__dict__["_reply_to_message_id"] = message_id


def is_training(msg: Message) -> bool:
    """True for `train` and `train.<action>` messages and their replies."""
    return msg.metadata.message_type.split(".")[0] == "train"
