"""Pieces of the WarmFed strategy and the results writer that need no federation."""

import json

import torch

from warmfed_flwr.results import RunRecorder
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
