"""Resilience of personalized models: on other clients' test splits, on a label-balanced split, how often worse."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from flwr.app import Context, Message

from expect import is_share
from warmfed_flwr.client.app import HANDLERS, build_client_app
from warmfed_flwr.client.context import partition_id
from warmfed_flwr.config import Settings
from warmfed_flwr.data import balanced_domain_test, load_client_data
from warmfed_flwr.phases.resilience import clients_evaluating
from warmfed_flwr.run.results import RunRecorder


def test_each_model_is_evaluated_by_the_next_clients_never_by_its_own():
    assert clients_evaluating([3, 0, 2, 1], 2) == {0: [1, 2], 1: [2, 3], 2: [3, 0], 3: [0, 1]}
    assert clients_evaluating([0, 1, 2], 10) == {0: [1, 2], 1: [2, 0], 2: [0, 1]}  # at most every other client
    assert clients_evaluating([5], 3) == {5: []}
    assert clients_evaluating([0, 1], 0) == {0: [], 1: []}


def test_averages_count_the_clients_personalization_made_worse(tmp_path: Path):
    recorder = RunRecorder(tmp_path, "warmfed", 0, 0, "digits-domains")
    for pid, (global_acc, personal_acc, others) in enumerate([(0.8, 0.9, 0.5), (0.9, 0.7, 0.6), (0.5, 0.5, None)]):
        client = recorder.add_client(pid, "d", node_id=10 + pid, num_test=10)
        client.global_acc, client.personal_acc, client.personal_acc_others = global_acc, personal_acc, others
    averages = recorder.averages()
    assert averages["personal_worse_than_global"] == pytest.approx(1 / 3)
    assert averages["personal_acc_others"] == pytest.approx(0.55)  # over the clients that have it
    assert averages["personal_acc_balanced"] is None
    recorder.write()
    assert "| 0 | d | 0.800 | 0.900 | 0.500 | - | 0 | 0 |" in (tmp_path / "summary.md").read_text()


def test_a_snapshot_keeps_and_restores_the_resilience_numbers(tmp_path: Path):
    recorder = RunRecorder(tmp_path, "warmfed", 1, 0, "digits-domains")
    client = recorder.add_client(0, "d", node_id=1, num_test=4)
    client.personal_acc_others, client.personal_acc_balanced = 0.25, 0.75
    saved = recorder.client_numbers()
    recorder.add_snapshot(0, 0.0)
    client.personal_acc_others, client.personal_acc_balanced = 1.0, 1.0
    recorder.restore_client_numbers(saved)
    assert (client.personal_acc_others, client.personal_acc_balanced) == (0.25, 0.75)
    [snapshot_client] = recorder.snapshots[0]["clients"]
    assert (snapshot_client["personal_acc_others"], snapshot_client["personal_acc_balanced"]) == (0.25, 0.75)


def test_a_resumed_run_from_before_the_resilience_numbers_takes_over_without_them(tmp_path: Path):
    old = RunRecorder(tmp_path / "old", "warmfed", 0, 0, "digits-domains")
    old.add_client(0, "d", node_id=1, num_test=4).global_acc = 0.5
    saved = old.to_dict()
    for client in saved["clients"]:
        del client["personal_acc_others"], client["personal_acc_balanced"]
    new = RunRecorder(tmp_path / "new", "warmfed", 0, 0, "digits-domains")
    new.add_client(0, "d", node_id=2, num_test=4)
    new.take_over(saved)
    assert (new.clients[0].global_acc, new.clients[0].personal_acc_others) == (0.5, None)


def test_the_balanced_split_has_every_class_equally_often_from_the_clients_whole_domain():
    settings = Settings.from_run_config(
        {"data.partitioning": "dirichlet", "data.dirichlet-alpha": 0.1, "data.clients-per-domain": 2}
    ).data
    own = load_client_data(settings, 1)
    balanced = balanced_domain_test(settings, 1)
    counts = np.bincount(balanced.labels.numpy(), minlength=10)
    assert counts.min() == counts.max() > 0
    own_counts = np.bincount(own.test.labels.numpy(), minlength=10)
    assert own_counts.max() > 2 * max(own_counts.min(), 1)  # the client's own test split is skewed
    again = balanced_domain_test(settings, 1)
    assert (again.labels == balanced.labels).all() and (again.images == balanced.images).all()


def test_personalized_models_are_evaluated_on_other_clients_and_a_balanced_split_without_changing_the_run(
    run_in_process, tmp_path
):
    skewed = {"method": "fedavg-ft", "data.partitioning": "dirichlet", "data.dirichlet-alpha": 0.1}
    evaluated = run_in_process(skewed | {"evaluate-others": 2, "output-dir": str(tmp_path / "on")}, num_supernodes=4)
    plain = run_in_process(skewed | {"evaluate-others": 0, "output-dir": str(tmp_path / "off")}, num_supernodes=4)
    for client in evaluated["clients"]:
        assert 0.0 <= client["personal_acc_others"] <= 1.0
        assert 0.0 <= client["personal_acc_balanced"] <= 1.0
    assert all(c["personal_acc_others"] is None for c in plain["clients"])
    assert [c["personal_acc_balanced"] for c in plain["clients"]] == [c["personal_acc_balanced"] for c in evaluated["clients"]]
    numbers = ("global_acc", "personal_acc", "bytes_up", "bytes_down")  # evaluation traffic is not the method's cost
    assert [[c[k] for k in numbers] for c in plain["clients"]] == [[c[k] for k in numbers] for c in evaluated["clients"]]
    assert evaluated["averages"]["personal_acc_others"] is not None
    assert evaluated["averages"]["personal_worse_than_global"] is not None


def test_with_label_shares_as_in_the_domain_there_is_no_balanced_split(run_in_process):
    results = run_in_process({"method": "local", "evaluate-others": 1}, num_supernodes=2)
    assert all(c["personal_acc_balanced"] is None for c in results["clients"])
    assert all(is_share(c["personal_acc"], c["num_test"]) for c in results["clients"])
    assert all(0.0 <= c["personal_acc_others"] <= 1.0 for c in results["clients"])  # from the cross-evaluation


def test_a_client_failing_in_the_cross_evaluation_is_recorded_and_the_run_completes(run_in_process):
    def crash_on_partition_1(msg: Message, context: Context) -> Message:
        if partition_id(context) == 1:
            raise RuntimeError("simulated crash in evaluate.cross")
        return HANDLERS["evaluate.cross"](msg, context)

    app = build_client_app({**HANDLERS, "evaluate.cross": crash_on_partition_1})
    # min-clients = every client: a training phase would stop the run, the evaluation must not
    results = run_in_process({"method": "fedavg-ft", "rounds": 1, "min-clients": 3, "evaluate-others": 1},
                             num_supernodes=3, client_app=app)
    assert [(f["phase"], f["partition_id"]) for f in results["failures"]] == [("finetune-others", 1)]
    others = {c["partition_id"]: c["personal_acc_others"] for c in results["clients"]}
    assert others[0] is None  # its only evaluator, partition 1, failed
    assert 0.0 <= others[1] <= 1.0 and 0.0 <= others[2] <= 1.0  # evaluated by partitions 2 and 0
    assert all(c["personal_acc"] is not None for c in results["clients"])
