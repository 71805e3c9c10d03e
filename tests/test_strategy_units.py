"""Pieces of the WarmFed strategy and the results writer that need no federation."""

import json

import numpy as np
import torch
from flwr.app import ArrayRecord, Message, Metadata, MetricRecord, RecordDict
from flwr.serverapp.strategy import FedAvg

from warmfed_flwr.results import RunRecorder
from warmfed_flwr.rounds import RecordingStrategy
from warmfed_flwr.strategy import labels_for_client


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
    try:
        with rec.phase("lora"):
            rec.clients[0].personal_acc = 0.5
            rec.add_failure("lora", 12, "client error: boom")
            raise RuntimeError("stop")
    except RuntimeError:
        pass
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["phases"][0]["name"] == "lora"
    assert results["failures"] == [
        {"phase": "lora", "partition_id": 1, "domain": "thick", "node_id": 12, "reason": "client error: boom"}
    ]
    assert results["averages"]["personal_acc"] == 0.5 and results["averages"]["global_acc"] is None
    assert "client error: boom" in (tmp_path / "summary.md").read_text()


def train_reply(node_id: int, weights: np.ndarray, examples: int) -> Message:
    metadata = Metadata(run_id=1, message_id=f"reply-{node_id}", src_node_id=node_id, dst_node_id=1,
                        reply_to_message_id="", group_id="1", created_at=0.0, ttl=60.0, message_type="train")
    content = RecordDict({"arrays": ArrayRecord({"w": torch.from_numpy(weights)}),
                          "metrics": MetricRecord({"num-examples": examples})})
    return Message(content, metadata=metadata)


def test_rounds_aggregate_in_partition_order_whatever_the_arrival_order(tmp_path):
    recorder = RunRecorder(tmp_path, "fedavg", 0, 1, "digits-domains")
    node_ids = [40, 10, 30, 20]  # partition 0 is node 40, ...: node order is not partition order
    for partition_id, node_id in enumerate(node_ids):
        recorder.add_client(partition_id, "clean", node_id=node_id)
    rng = np.random.default_rng(0)
    replies = [train_reply(node, rng.standard_normal(1000).astype(np.float32), 268 + i) for i, node in enumerate(node_ids)]
    arrivals = [replies, replies[::-1], [replies[2], replies[0], replies[3], replies[1]]]

    plain = [FedAvg().aggregate_train(1, arrival)[0]["w"].numpy() for arrival in arrivals]
    recorded = [
        RecordingStrategy(FedAvg(), recorder, {}, min_clients=4, timeout=10.0).aggregate_train(1, arrival)[0]["w"].numpy()
        for arrival in arrivals
    ]

    assert any(not np.array_equal(plain[0], other) for other in plain[1:])  # Flower's sum depends on the order
    assert all(np.array_equal(recorded[0], other) for other in recorded[1:])
    assert np.array_equal(recorded[0], plain[0])  # arrivals[0] is partition order
