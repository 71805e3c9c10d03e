"""Pieces of the WarmFed strategy and the results writer that need no federation."""

import json

import numpy as np
import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, Metadata, MetricRecord, RecordDict
from flwr.serverapp.strategy import FedAvg, Result

from warmfed_flwr.config import Settings
from warmfed_flwr.phases.rounds import RoundsGrid
from warmfed_flwr.phases.warmstart import labels_for_client
from warmfed_flwr.run.results import RunRecorder


def test_synthetic_labels_follow_the_client_counts_exactly():
    labels = labels_for_client([30, 10, 0, 60], num_classes=4, total=50)
    assert len(labels) == 50
    assert torch.bincount(labels, minlength=4).tolist() == [15, 5, 0, 30]


def test_synthetic_labels_are_uniform_when_counts_are_withheld():
    labels = labels_for_client(None, num_classes=3, total=10)
    assert sorted(torch.bincount(labels, minlength=3).tolist()) == [3, 3, 4]


def test_recorder_writes_results_after_each_phase_even_when_it_fails(tmp_path):
    rec = RunRecorder(tmp_path, "warmfed", 0, 1, "digits-domains")
    rec.add_client(0, "clean", node_id=11)
    rec.add_client(1, "thick", node_id=12)
    with pytest.raises(RuntimeError, match="stop"), rec.phase("lora"):
        rec.clients[0].personal_acc = 0.5
        rec.add_failure("lora", 12, "client error: boom")
        raise RuntimeError("stop")
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["phases"][0]["name"] == "lora"
    assert results["failures"] == [
        {"phase": "lora", "partition_id": 1, "domain": "thick", "node_id": 12, "reason": "client error: boom"}
    ]
    assert results["averages"]["personal_acc"] == 0.5 and results["averages"]["global_acc"] is None
    assert "client error: boom" in (tmp_path / "summary.md").read_text()


def train_message(node_id: int) -> Message:
    metadata = Metadata(run_id=1, message_id=f"msg-{node_id}", src_node_id=1, dst_node_id=node_id,
                        reply_to_message_id="", group_id="1", created_at=0.0, ttl=60.0, message_type="train")
    return Message(RecordDict({"config": ConfigRecord({"server-round": 1})}), metadata=metadata)


def train_reply(node_id: int, weights: np.ndarray, examples: int) -> Message:
    metadata = Metadata(run_id=1, message_id=f"reply-{node_id}", src_node_id=node_id, dst_node_id=1,
                        reply_to_message_id=f"msg-{node_id}", group_id="1", created_at=0.0, ttl=60.0,
                        message_type="train")
    content = RecordDict({"arrays": ArrayRecord({"w": torch.from_numpy(weights)}),
                          "metrics": MetricRecord({"num-examples": examples})})
    return Message(content, metadata=metadata)


class ArrivalGrid:
    """Answers every batch with the given replies, in the given (arrival) order."""

    def __init__(self, replies: list[Message]) -> None:
        self.replies = replies

    def send_and_receive(self, messages, *, timeout=None):
        return list(self.replies)


def test_rounds_aggregate_in_partition_order_whatever_the_arrival_order(tmp_path):
    recorder = RunRecorder(tmp_path, "fedavg", 0, 1, "digits-domains")
    node_ids = [40, 10, 30, 20]  # partition 0 is node 40, ...: node order is not partition order
    for partition_id, node_id in enumerate(node_ids):
        recorder.add_client(partition_id, "clean", node_id=node_id)
    rng = np.random.default_rng(0)
    replies = [train_reply(node, rng.standard_normal(1000).astype(np.float32), 268 + i) for i, node in enumerate(node_ids)]
    arrivals = [replies, replies[::-1], [replies[2], replies[0], replies[3], replies[1]]]
    settings = Settings.from_run_config({"method": "fedavg", "min-clients": 4, "timeout": 10.0})

    plain = [FedAvg().aggregate_train(1, arrival)[0]["w"].numpy() for arrival in arrivals]
    recorded = []
    for arrival in arrivals:
        rounds_grid = RoundsGrid(ArrivalGrid(arrival), recorder, settings, first_round=3)
        messages = [train_message(node) for node in node_ids]
        recorded.append(FedAvg().aggregate_train(1, rounds_grid.send_and_receive(messages))[0]["w"].numpy())
        assert rounds_grid.round == 3 and messages[0].content["config"]["server-round"] == 3  # the run's numbering

    assert any(not np.array_equal(plain[0], other) for other in plain[1:])  # Flower's sum depends on the order
    assert all(np.array_equal(recorded[0], other) for other in recorded[1:])
    assert np.array_equal(recorded[0], plain[0])  # arrivals[0] is partition order


class EchoGrid:
    """Every node answers every message: train with the arrays it got, evaluate with accuracy 0.5."""

    def send_and_receive(self, messages, *, timeout=None):
        replies = []
        for msg in messages:
            metadata = Metadata(run_id=1, message_id=f"reply-{msg.metadata.message_id}", src_node_id=msg.metadata.dst_node_id,
                                dst_node_id=1, reply_to_message_id=msg.metadata.message_id, group_id="1",
                                created_at=0.0, ttl=60.0, message_type=msg.metadata.message_type)
            content = (RecordDict({"arrays": msg.content["arrays"], "metrics": MetricRecord({"num-examples": 1})})
                       if msg.metadata.message_type == "train" else RecordDict({"metrics": MetricRecord({"accuracy": 0.5})}))
            replies.append(Message(content, metadata=metadata))
        return replies


def batch(kind: str, arrays: ArrayRecord, node_ids: list[int], server_round: int) -> list[Message]:
    content = RecordDict({"arrays": arrays, "config": ConfigRecord({"server-round": server_round})})
    return [Message(content, metadata=Metadata(run_id=1, message_id=f"{kind}-{server_round}-{node}", src_node_id=1,
                                               dst_node_id=node, reply_to_message_id="", group_id=str(server_round),
                                               created_at=0.0, ttl=60.0, message_type=kind))
            for node in node_ids]


def test_server_fine_tuning_replaces_each_aggregated_model_once_and_never_the_initial_one(tmp_path):
    recorder = RunRecorder(tmp_path, "warmfed", 2, 0, "digits-domains")
    for partition_id, node_id in enumerate([10, 20]):
        recorder.add_client(partition_id, "clean", node_id=node_id)
    fine_tuned_from, ends = [], []

    def fine_tune(arrays: ArrayRecord) -> ArrayRecord:
        fine_tuned_from.append(arrays)
        return ArrayRecord({"w": torch.from_numpy(arrays["w"].numpy() + 1.0)})

    settings = Settings.from_run_config({"min-clients": 2})
    grid = RoundsGrid(EchoGrid(), recorder, settings, server_update=fine_tune,
                      on_round_end=lambda r, arrays: ends.append((r, float(arrays["w"].numpy()[0]))))
    initial, aggregated, last = (ArrayRecord({"w": torch.full((2,), value)}) for value in (0.0, 10.0, 20.0))

    grid.send_and_receive(batch("train", initial, [10, 20], 1))  # round 1 starts from the initial model
    evaluate = batch("evaluate", aggregated, [10, 20], 1)  # round 1's aggregate: fine-tuned before it is evaluated
    grid.send_and_receive(evaluate)
    assert float(evaluate[0].content["arrays"]["w"].numpy()[0]) == 11.0
    train = batch("train", aggregated, [10, 20], 2)  # the strategy trains on from its own (aggregated) arrays
    grid.send_and_receive(train)
    assert float(train[1].content["arrays"]["w"].numpy()[0]) == 11.0  # the clients get the fine-tuned model
    final = grid.finish(Result(arrays=last))  # round 2 was not evaluated: it ends with the final model

    assert fine_tuned_from == [aggregated, last] and float(final["w"].numpy()[0]) == 21.0
    assert ends == [(1, 11.0), (2, 21.0)]
    assert [r["round"] for r in recorder.round_history] == [1] and recorder.failures == []
