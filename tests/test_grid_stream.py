"""MeteredGrid.stream: replies come to the caller as they arrive, a reply lost to the infrastructure is asked again
at once and answers the caller's message, a message without a reply ends with its timeout."""

from __future__ import annotations

import time
from pathlib import Path

from flwr.app import ConfigRecord, Error, Message, Metadata, MetricRecord, RecordDict
from flwr.common.constant import SUPERLINK_NODE_ID, ErrorCode
from flwr.supercore.task_identity import TaskIdentity

from warmfed_flwr.run.grid import MeteredGrid
from warmfed_flwr.run.results import RunRecorder
from warmfed_flwr.runtime.placement import PLACEMENT_KEY


class ScriptedGrid:
    """A Grid whose nodes answer by script: per node, what each attempt gets (None: no reply ever), and after how
    many pulls."""

    pull_interval = 0.01

    def __init__(self, script: dict[int, list[tuple[str, int] | None]]) -> None:
        self.script = script
        self.attempts: dict[int, int] = {}
        self.pending: list[tuple[int, Message]] = []  # (pulls left, reply)
        self.pushed = 0

    def push_messages(self, messages: list[Message]) -> list[str]:
        ids = []
        for msg in messages:
            self.pushed += 1
            msg.metadata.__dict__["_message_id"] = f"m{self.pushed}"
            node = msg.metadata.dst_node_id
            attempt = self.attempts.get(node, 0)
            self.attempts[node] = attempt + 1
            answer = self.script[node][attempt]
            if answer is not None:
                self.pending.append((answer[1], reply(msg, answer[0])))
            ids.append(msg.metadata.message_id)
        return ids

    def pull_messages(self, message_ids: list[str]) -> list[Message]:
        ready = [r for pulls, r in self.pending if pulls <= 0 and r.metadata.reply_to_message_id in message_ids]
        self.pending = [(pulls - 1, r) for pulls, r in self.pending if r not in ready]
        return ready

    def get_node_ids(self) -> list[int]:
        return list(self.script)


def reply(msg: Message, kind: str) -> Message:
    metadata = Metadata(run_id=1, message_id=f"reply-{msg.metadata.message_id}", src_node_id=msg.metadata.dst_node_id,
                        dst_node_id=1, reply_to_message_id=msg.metadata.message_id, group_id="1", created_at=0.0,
                        ttl=60.0, message_type=msg.metadata.message_type)
    if kind == "lost":
        return Message(error=Error(ErrorCode.UNKNOWN, "ActorDiedError: the worker died"), metadata=metadata)
    if kind == "offline":
        return Message(error=Error(ErrorCode.NODE_UNAVAILABLE, "no heartbeat"), metadata=metadata)
    content = RecordDict({"metrics": MetricRecord({"num-examples": 1}),
                          PLACEMENT_KEY: ConfigRecord({"host": "h", "pid": 7})})
    return Message(content, metadata=metadata)


def message(node: int) -> Message:
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, SUPERLINK_NODE_ID  # a retry makes a Message
    metadata = Metadata(run_id=1, message_id="", src_node_id=1, dst_node_id=node, reply_to_message_id="",
                        group_id="1", created_at=time.time(), ttl=60.0, message_type="train.lora")
    return Message(RecordDict(), metadata=metadata)


def test_replies_stream_as_they_arrive_and_a_lost_one_is_asked_again_at_once(tmp_path: Path) -> None:
    recorder = RunRecorder(tmp_path, "warmfed", 0, 0, "digits-domains")
    for partition, node in enumerate((10, 20, 30)):
        recorder.add_client(partition, "clean", node_id=node)
    grid = ScriptedGrid({10: [("ok", 5)], 20: [("lost", 0), ("ok", 0)], 30: [None]})
    grid_under_test = MeteredGrid(grid, recorder, retries=2)
    messages = [message(node) for node in (10, 20, 30)]
    start = time.monotonic()
    replies = list(grid_under_test.stream(messages, timeout=0.3))
    assert [r.metadata.src_node_id for r in replies] == [20, 10]  # the retried node's reply came first
    assert replies[0].metadata.reply_to_message_id == messages[1].metadata.message_id  # answers the caller's message
    assert [(r["partition_id"], r["attempt"]) for r in recorder.retries] == [(1, 1)]
    assert 0.3 <= time.monotonic() - start < 2.0  # node 30 never answers: its timeout ends the stream
    assert all(PLACEMENT_KEY not in r.content for r in replies)
    assert recorder.clients[0].details["ran_on"] == {"": [{"host": "h", "pid": 7}]}


def test_a_reply_lost_on_every_attempt_is_handed_over_as_the_error_it_is(tmp_path: Path) -> None:
    recorder = RunRecorder(tmp_path, "warmfed", 0, 0, "digits-domains")
    recorder.add_client(0, "clean", node_id=10)
    grid = MeteredGrid(ScriptedGrid({10: [("lost", 0)] * 3}), recorder, retries=2)
    (last,) = grid.stream([message(10)], timeout=5.0)
    assert last.has_error() and [r["attempt"] for r in recorder.retries] == [1, 2]


def test_a_reply_stored_before_its_timeout_is_not_lost_while_the_caller_works_on_another(tmp_path: Path) -> None:
    recorder = RunRecorder(tmp_path, "warmfed", 0, 0, "digits-domains")
    for partition, node in enumerate((10, 20)):
        recorder.add_client(partition, "clean", node_id=node)
    grid = MeteredGrid(ScriptedGrid({10: [("ok", 0)], 20: [("ok", 1)]}), recorder)
    got = []
    for reply in grid.stream([message(10), message(20)], timeout=0.2):
        got.append(reply.metadata.src_node_id)
        time.sleep(0.3)  # validating and storing an adapter takes longer than the timeout
    assert got == [10, 20]


class FlakyNodesGrid(ScriptedGrid):
    """A ScriptedGrid whose SuperNodes in `offline` are not connected for that many `get_node_ids` calls (-1: never
    again)."""

    def __init__(self, script: dict[int, list[tuple[str, int] | None]], offline: dict[int, int]) -> None:
        super().__init__(script)
        self.offline = offline

    def get_node_ids(self) -> list[int]:
        self.offline = {node: left - 1 if left > 0 else left for node, left in self.offline.items()}
        return [node for node in self.script if self.offline.get(node, 0) == 0]


def test_waiting_for_one_offline_supernode_does_not_miss_another_that_comes_back(tmp_path: Path) -> None:
    """Node 10 is gone for good, node 20 restarts at once: 20 is asked again while the grid still waits for 10, and
    10's error is handed over when `retry-wait` ends (a deployment kills both at once and restarts one)."""
    recorder = RunRecorder(tmp_path, "warmfed", 0, 0, "digits-domains")
    for partition, node in enumerate((10, 20)):
        recorder.add_client(partition, "clean", node_id=node)
    grid = FlakyNodesGrid({10: [("offline", 0)], 20: [("offline", 0), ("ok", 0)]}, offline={10: -1, 20: 3})
    grid_under_test = MeteredGrid(grid, recorder, retries=2, retry_wait=1.0)
    start = time.monotonic()
    arrivals = [(r.metadata.src_node_id, r.has_error(), time.monotonic() - start)
                for r in grid_under_test.stream([message(10), message(20)], timeout=30.0)]
    assert [(node, error) for node, error, _ in arrivals] == [(20, False), (10, True)]
    assert arrivals[0][2] < 0.5 <= 1.0 <= arrivals[1][2] < 3.0
    assert [(r["partition_id"], r["attempt"]) for r in recorder.retries] == [(1, 1)]
