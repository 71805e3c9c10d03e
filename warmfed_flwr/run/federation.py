"""Talking to the clients: discovery and one message per client per phase.

Messages go through the run's `MeteredGrid` (run/grid.py), which retries what the infrastructure
lost. What is left, a reply that is missing (none within `timeout`) or carries an error (the
ClientApp raised, or the infrastructure failed every attempt), is recorded as a failure of that
client in that phase; the phase goes on with the others while at least `min-clients` answered,
otherwise it raises `TooFewClientsError`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Iterable, Iterator, Mapping

from flwr.app import ConfigRecord, Message, RecordDict
from flwr.serverapp import Grid

from warmfed_flwr.logs import logger
from warmfed_flwr.run.grid import INFRASTRUCTURE_ERRORS, DelegatingGrid
from warmfed_flwr.run.results import RunRecorder

# In node-local runs every message after discovery carries the class list agreed at discovery in this record.
AGREED_CLASSES_KEY = "agreed-classes"
SYNTHETIC_SHARE_KEY = "synthetic-share"  # a client's share of the synthetic pool, sent with DSD (dsd.synthetic-share)


def agreed_classes_record(class_names: tuple[str, ...]) -> ConfigRecord:
    """The record that tells node-local clients the federation's class list (and so their label numbers)."""
    return ConfigRecord({"class-names": list(class_names)})


class TooFewClientsError(RuntimeError):
    """Fewer than `min-clients` clients answered a phase."""


class FederationMismatchError(RuntimeError):
    """The SuperNodes do not match the number of clients the data is split into."""


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
    """Why a reply carries an error: the infrastructure failed (its SuperNode went offline, its Ray worker died, ...;
    run/grid.py names each), or the ClientApp raised (with the client's message)."""
    label = INFRASTRUCTURE_ERRORS.get(reply.error.code, "client error")
    return f"{label}: {reply.error.reason}"


def keep_good_replies(
    recorder: RunRecorder, phase: str, sent: Iterable[Message], replies: Iterable[Message], timeout: float
) -> list[Message]:
    """The replies without an error; each error reply, and each message of `sent` without a reply, is a failure."""
    sent = list(sent)
    replies = list(replies)
    destinations = destinations_of(sent)
    good = [reply for reply in replies if is_good_reply(recorder, phase, destinations, reply)]
    record_unanswered(recorder, phase, sent, {reply.metadata.reply_to_message_id for reply in replies}, timeout)
    return good


def destinations_of(sent: list[Message]) -> dict[str, int]:
    """The node each sent message went to, by message id (set once the messages are pushed)."""
    return {msg.metadata.message_id: msg.metadata.dst_node_id for msg in sent}


def is_good_reply(recorder: RunRecorder, phase: str, destinations: Mapping[str, int], reply: Message) -> bool:
    """True for a reply without an error; an error reply is recorded as a failure of the node its message went to
    (the SuperLink, not the node, sends the error reply for a SuperNode that went offline)."""
    if not reply.has_error():
        return True
    destination = destinations.get(reply.metadata.reply_to_message_id, reply.metadata.src_node_id)
    reason = failure_reason(reply)
    recorder.add_failure(phase, destination, reason)
    logger.warning("[%s] node %d failed: %s", phase, destination, reason)
    return False


def record_unanswered(
    recorder: RunRecorder, phase: str, sent: list[Message], answered: set[str], timeout: float
) -> None:
    """Record a failure for each message of `sent` whose id is not in `answered`."""
    for node_id in sorted(msg.metadata.dst_node_id for msg in sent if msg.metadata.message_id not in answered):
        recorder.add_failure(phase, node_id, f"no reply within {timeout:g} s")
        logger.warning("[%s] node %d did not reply within %g s", phase, node_id, timeout)


@dataclass(frozen=True)
class ReplyLimits:
    """How long a phase waits for its replies, and how many good ones it needs to go on."""

    timeout: float
    min_clients: int


def stream_phase(
    grid: DelegatingGrid,
    recorder: RunRecorder,
    phase: str,
    message_type: str,
    contents: Mapping[int, RecordDict],
    limits: ReplyLimits,
) -> Iterator[tuple[int, RecordDict]]:
    """Send one message per node; yield (node id, content) of each good reply as it arrives; record every failure.

    After the last reply, TooFewClientsError if fewer than `min_clients` answered. A message carries only what its
    phase needs: every client reads the run's settings from the run config Flower gives it (`context.run_config`),
    the same as the server's.
    """
    if not contents:
        return
    messages = [
        Message(content=content, dst_node_id=node_id, message_type=message_type) for node_id, content in contents.items()
    ]
    logger.info("[%s] sending %s to %d clients", phase, message_type, len(messages))
    answered: set[str] = set()
    destinations: dict[str, int] = {}
    good = 0
    for reply in grid.stream(messages, timeout=limits.timeout):
        destinations = destinations or destinations_of(messages)  # the ids exist once the stream has pushed them
        answered.add(reply.metadata.reply_to_message_id)
        if is_good_reply(recorder, phase, destinations, reply):
            good += 1
            yield reply.metadata.src_node_id, reply.content
    record_unanswered(recorder, phase, messages, answered, limits.timeout)
    if good < limits.min_clients:
        raise TooFewClientsError(
            f"phase '{phase}': only {good} of {len(contents)} clients answered, "
            f"fewer than min-clients={limits.min_clients}; failures: {recorder.failure_reasons(phase)}"
        )


def _query_info(
    grid: DelegatingGrid,
    recorder: RunRecorder,
    node_ids: list[int],
    expected: int | None,
    timeout: float,
) -> list[ClientInfo]:
    """Ask `node_ids` which partition they hold; fail fast when a node was started for another split.

    With `expected` None (node-local data: the server cannot count the clients) the nodes' own
    `num-partitions` is the federation's size, and every node must give the same.
    """
    replies = dict(stream_phase(
        grid, recorder, "discover", "query.info", {n: RecordDict() for n in node_ids}, ReplyLimits(timeout, 0)
    ))
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
    grid: DelegatingGrid,
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
