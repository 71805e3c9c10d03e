"""Talking to the clients: a byte-counting, retrying Grid, client discovery, and one-shot phase messages.

A reply lost to the infrastructure (the Ray worker running the client died, the SuperNode went
offline, a message or reply went missing) is not the client's fault: the Grid asks the client again
with the same message, up to `retries` times, giving an offline SuperNode `retry-wait` seconds to come back first,
and records each retry. What is left, a reply that is missing (none within `timeout`) or carries an
error (the ClientApp raised, or the infrastructure failed every attempt), is recorded as a failure
of that client in that phase; the phase goes on with the others while at least `min-clients`
answered, otherwise it raises `TooFewClientsError`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Iterable, Mapping

from flwr.app import ConfigRecord, Message, RecordDict
from flwr.common.constant import ErrorCode
from flwr.serverapp import Grid

from warmfed_flwr.logs import logger
from warmfed_flwr.run.results import RunRecorder
from warmfed_flwr.run.transport import content_bytes

# In node-local runs every message after discovery carries the class list agreed at discovery in this record.
AGREED_CLASSES_KEY = "agreed-classes"


def agreed_classes_record(class_names: tuple[str, ...]) -> ConfigRecord:
    """The record that tells node-local clients the federation's class list (and so their label numbers)."""
    return ConfigRecord({"class-names": list(class_names)})


class TooFewClientsError(RuntimeError):
    """Fewer than `min-clients` clients answered a phase."""


class FederationMismatchError(RuntimeError):
    """The SuperNodes do not match the number of clients the data is split into."""


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


class MeteredGrid(DelegatingGrid):
    """A Grid that meters training bytes per client and asks clients lost to infrastructure faults again.

    Only `train.*` messages count (LoRA upload, rounds, DSD, local training): discovery and
    evaluation messages exist to measure the run and would otherwise make a method's cost depend
    on how often it is evaluated. A message sent again counts again.

    `send_and_receive` (what every phase and Flower's strategies use) resends a message whose reply
    is an infrastructure error (`INFRASTRUCTURE_ERRORS`), unchanged, up to `retries` times; an
    offline SuperNode is first given `retry_wait` seconds to come back online. Each retry is
    recorded (`RunRecorder.add_retry`); the caller sees only the last attempt's reply.

    Records given to `send_with_every_message` (the agreed class list of a node-local run) are added
    to every message sent from then on.
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
        self._count_up(replies)
        return replies

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        messages = self._with_shared(messages)
        self._count_down(messages)
        replies = list(self._grid.send_and_receive(messages, timeout=timeout))
        first_id = {msg.metadata.message_id: msg.metadata.message_id for msg in messages}  # attempt -> caller's id
        for attempt in range(1, self._retries + 1):
            last_sent = {msg.metadata.message_id: msg for msg in messages}
            retried: list[tuple[Message, Message]] = []  # (lost reply, the message sent again)
            for reply in replies:
                original = last_sent.get(reply.metadata.reply_to_message_id)
                fault = infrastructure_fault(reply)
                if original is not None and fault is not None:
                    again = self._again(original, fault, attempt)
                    if again is not None:
                        retried.append((reply, again))
            if not retried:
                break
            messages = [again for _, again in retried]
            self._count_down(messages)
            answered_again = {id(reply) for reply, _ in retried}
            replies = [reply for reply in replies if id(reply) not in answered_again]
            replies += list(self._grid.send_and_receive(messages, timeout=timeout))
            first_id |= {again.metadata.message_id: first_id[lost.metadata.reply_to_message_id] for lost, again in retried}
        for reply in replies:  # each reply answers the caller's message, whichever attempt it came from
            answers(reply, first_id.get(reply.metadata.reply_to_message_id, reply.metadata.reply_to_message_id))
        self._count_up(replies)
        return replies

    def _again(self, original: Message, fault: str, attempt: int) -> Message | None:
        """A copy of `original` to send once more, recorded as a retry; None if its SuperNode stays offline."""
        node_id = original.metadata.dst_node_id
        if fault.startswith(INFRASTRUCTURE_ERRORS[ErrorCode.NODE_UNAVAILABLE]) and not self._wait_online(node_id):
            logger.warning("[retry] node %d did not come back online; not asked again", node_id)
            return None
        self._recorder.add_retry(node_id, original.metadata.message_type, attempt, fault)
        client = self._recorder.client_of_node(node_id)
        who = f"partition {client.partition_id}" if client is not None else f"node {node_id}"
        logger.warning("[retry] %s lost to the infrastructure (%s); asking again (%d of %d)",
            who, fault.split(":")[0], attempt, self._retries)
        metadata = original.metadata
        return Message(content=original.content, dst_node_id=node_id, message_type=metadata.message_type,
                       group_id=metadata.group_id, ttl=metadata.ttl)

    def _wait_online(self, node_id: int, poll_seconds: float = 1.0) -> bool:
        """True once `node_id` is connected again, False after `retry_wait` seconds."""
        deadline = time.monotonic() + self._retry_wait
        while node_id not in set(self._grid.get_node_ids()):
            if time.monotonic() >= deadline:
                return False
            time.sleep(poll_seconds)
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

    def _count_up(self, replies: list[Message]) -> None:
        for reply in replies:
            client = self._recorder.client_of_node(reply.metadata.src_node_id)
            if client is not None and is_training(reply) and not reply.has_error():
                client.bytes_up += content_bytes(reply.content)


def answers(reply: Message, message_id: str) -> None:
    """Make `reply` answer message `message_id` (a retried message's reply answers the caller's first one).

    Flower's own Grid sets the field the same way: Metadata has no setter for it.
    """
    reply.metadata.__dict__["_reply_to_message_id"] = message_id


def is_training(msg: Message) -> bool:
    """True for `train` and `train.<action>` messages and their replies."""
    return msg.metadata.message_type.split(".")[0] == "train"


@dataclass(frozen=True)
class ClientInfo:
    """What a client tells the server at discovery."""

    node_id: int
    partition_id: int
    num_partitions: int
    domain: str
    num_train: int
    num_test: int
    class_names: tuple[str, ...]


def wait_for_nodes(grid: Grid, expected: int, wait_seconds: float) -> list[int]:
    """Node ids once `expected` SuperNodes are connected, or whatever is connected after `wait_seconds`."""
    deadline = time.monotonic() + wait_seconds
    while True:
        node_ids = sorted(grid.get_node_ids())
        if len(node_ids) >= expected or time.monotonic() >= deadline:
            return node_ids
        time.sleep(0.5)


def failure_reason(reply: Message) -> str:
    """Why a reply carries an error: its SuperNode went offline, or the ClientApp raised (with the client's message)."""
    if reply.error.code == ErrorCode.NODE_UNAVAILABLE:
        return f"SuperNode unavailable: {reply.error.reason}"
    return f"client error: {reply.error.reason}"


def keep_good_replies(
    recorder: RunRecorder, phase: str, sent: Iterable[Message], replies: Iterable[Message], timeout: float
) -> list[Message]:
    """The replies without an error; each error reply, and each message of `sent` without a reply, is a failure.

    A reply is matched to the node its message went to: the SuperLink, not the node, sends the error
    reply for a SuperNode that went offline.
    """
    destination = {msg.metadata.message_id: msg.metadata.dst_node_id for msg in sent}
    good, answered = [], set()
    for reply in replies:
        node_id = destination.get(reply.metadata.reply_to_message_id, reply.metadata.src_node_id)
        answered.add(node_id)
        if reply.has_error():
            reason = failure_reason(reply)
            recorder.add_failure(phase, node_id, reason)
            logger.warning("[%s] node %d failed: %s", phase, node_id, reason)
        else:
            good.append(reply)
    for node_id in sorted(set(destination.values()) - answered):
        recorder.add_failure(phase, node_id, f"no reply within {timeout:g} s")
        logger.warning("[%s] node %d did not reply within %g s", phase, node_id, timeout)
    return good


def send_phase(
    grid: Grid,
    recorder: RunRecorder,
    phase: str,
    message_type: str,
    contents: Mapping[int, RecordDict],
    timeout: float,
    min_clients: int,
) -> dict[int, RecordDict]:
    """Send one message per node, return the good replies by node id, record every failure.

    A message carries only what its phase needs: every client reads the run's settings from the run
    config Flower gives it (`context.run_config`), the same as the server's.
    """
    if not contents:
        return {}
    messages = [
        Message(content=content, dst_node_id=node_id, message_type=message_type) for node_id, content in contents.items()
    ]
    logger.info("[%s] sending %s to %d clients", phase, message_type, len(messages))
    replies = grid.send_and_receive(messages, timeout=timeout)
    good = {
        reply.metadata.src_node_id: reply.content
        for reply in keep_good_replies(recorder, phase, messages, replies, timeout)
    }
    if len(good) < min_clients:
        raise TooFewClientsError(
            f"phase '{phase}': only {len(good)} of {len(contents)} clients answered, "
            f"fewer than min-clients={min_clients}; see failures in results.json"
        )
    return good


def _query_info(
    grid: Grid,
    recorder: RunRecorder,
    node_ids: list[int],
    expected: int | None,
    timeout: float,
) -> list[ClientInfo]:
    """Ask `node_ids` which partition they hold; fail fast when a node was started for another split.

    With `expected` None (node-local data: the server cannot count the clients) the nodes' own
    `num-partitions` is the federation's size, and every node must give the same.
    """
    replies = send_phase(
        grid, recorder, "discover", "query.info", {n: RecordDict() for n in node_ids}, timeout, 0
    )
    infos = []
    for node_id, content in sorted(replies.items()):
        rec = content["info"]
        info = ClientInfo(
            node_id=node_id,
            partition_id=int(rec["partition-id"]),
            num_partitions=int(rec["num-partitions"]),
            domain=str(rec["domain"]),
            num_train=int(rec["num-train"]),
            num_test=int(rec["num-test"]),
            class_names=tuple(str(n) for n in rec["class-names"]),
        )
        if expected is None:
            if info.num_partitions < 1:
                raise FederationMismatchError(
                    f"SuperNode {node_id} was started without num-partitions; with node-local data start every "
                    "SuperNode with --node-config 'partition-id=K num-partitions=N data-root=\"/path\"'"
                )
        elif info.num_partitions != expected:
            raise FederationMismatchError(
                f"SuperNode {node_id} was started with num-partitions={info.num_partitions} but the data is "
                f"split into {expected} clients; run with --federation-config 'num-supernodes={expected}' "
                f"(deployment: --node-config 'partition-id=K num-partitions={expected}')"
            )
        infos.append(info)
    sizes = sorted({info.num_partitions for info in infos})
    if expected is None and len(sizes) > 1:
        raise FederationMismatchError(f"SuperNodes were started with different num-partitions: {sizes}")
    return infos


def discover_clients(
    grid: Grid,
    recorder: RunRecorder,
    expected: int | None,
    timeout: float,
    min_clients: int,
    wait_seconds: float = 120.0,
) -> list[ClientInfo]:
    """Find the SuperNodes, ask each which partition it holds, and check they match the data's split.

    The first nodes are asked at once, so a federation sized for another split fails in seconds;
    then discovery waits up to `wait_seconds` for the rest and goes on with at least `min_clients`.
    `expected` None: node-local data, the first nodes' `num-partitions` says how many to wait for.
    """
    infos = _query_info(grid, recorder, wait_for_nodes(grid, 1, wait_seconds), expected, timeout)
    if expected is None:
        expected = infos[0].num_partitions if infos else min_clients
    remaining = wait_for_nodes(grid, expected, wait_seconds)
    if len(remaining) > expected:
        raise FederationMismatchError(
            f"{len(remaining)} SuperNodes are connected but the data is split into {expected} clients; "
            f"start the run with --federation-config 'num-supernodes={expected}'"
        )
    asked = {i.node_id for i in infos}
    infos += _query_info(grid, recorder, [n for n in remaining if n not in asked], expected, timeout)
    recorder.clear_failures("discover", {i.node_id for i in infos})  # too slow for the first probe is no failure
    if len(infos) < min_clients:
        raise TooFewClientsError(f"only {len(infos)} of {expected} clients answered discovery (min-clients={min_clients})")
    seen = [i.partition_id for i in infos]
    if len(set(seen)) != len(seen):
        raise FederationMismatchError(f"two SuperNodes claim the same partition-id: {sorted(seen)}")
    infos.sort(key=lambda i: i.partition_id)
    for info in infos:
        recorder.add_client(info.partition_id, info.domain, info.node_id, info.num_test)
    logger.info("[discover] %d clients: %s", len(infos), ", ".join(f"{i.partition_id}:{i.domain}" for i in infos))
    return infos
