"""FedBN and Ditto: personalized peers trained during the rounds, in the same harness as WarmFed."""

from __future__ import annotations

import pytest
import torch
from flwr.app import RecordDict

from expect import assert_accuracies
from warmfed_flwr.config import ConfigError, Settings
from warmfed_flwr.data.types import ImageSplit
from warmfed_flwr.learning.models import build_classifier
from warmfed_flwr.learning.personal import (
    LOCAL_NORM,
    batch_norm_keys,
    keep_local_norm,
    load_with_local_norm,
    without_batch_norm,
)
from warmfed_flwr.learning.training import Schedule, train_supervised


def test_fedbn_sends_everything_but_batch_norm_and_puts_its_own_back():
    trained = build_classifier("cnn-bn", 10, 16, seed=1)
    trained(torch.rand(8, 3, 16, 16))  # train mode: moves the running statistics away from their start
    sent = without_batch_norm(trained)
    norm = batch_norm_keys(trained)
    assert norm and not norm & set(sent.keys()) and set(sent.keys()) | norm == set(trained.state_dict())
    state = RecordDict()
    keep_local_norm(trained, state)
    fresh = load_with_local_norm(build_classifier("cnn-bn", 10, 16, seed=2), sent, state)
    for key, value in trained.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value), key
    assert set(state[LOCAL_NORM].keys()) == norm


def test_a_fedbn_client_without_its_batch_norm_layers_is_told_what_is_missing():
    sent = without_batch_norm(build_classifier("cnn-bn", 10, 16))
    with pytest.raises(ValueError, match="lacks .*running_mean|lacks .*weight|lacks .*bias"):
        load_with_local_norm(build_classifier("cnn-bn", 10, 16), sent, RecordDict())


def test_fedbn_needs_a_model_with_batch_norm():
    with pytest.raises(ConfigError, match="'model.name' = 'cnn'"):
        Settings.from_run_config({"method": "fedbn"})
    assert Settings.from_run_config({"method": "fedbn", "model.name": "cnn-bn"}).method == "fedbn"


def test_the_proximal_term_pulls_towards_the_given_anchor():
    torch.manual_seed(0)
    split = ImageSplit(torch.rand(32, 3, 16, 16), torch.randint(0, 10, (32,)))
    schedule = Schedule(epochs=3, lr=0.05, batch_size=8, seed=0, device=torch.device("cpu"))
    anchor_model = build_classifier("cnn", 10, 16, seed=5)
    anchor = [p.detach().clone() for p in anchor_model.parameters()]

    def distance_after(mu: float) -> float:
        model = build_classifier("cnn", 10, 16, seed=0)
        train_supervised(model, split, schedule, proximal_mu=mu, anchor=anchor)
        return float(sum(((p.detach() - a) ** 2).sum() for p, a in zip(model.parameters(), anchor)))

    assert distance_after(10.0) < 0.5 * distance_after(0.0)


NUMBERS = ("bytes_up", "bytes_down")


def test_fedbn_and_ditto_run_through_the_rounds_and_report_their_personal_models(run_in_process, tmp_path):
    def run(method: str) -> dict:
        config = {"method": method, "rounds": 2, "model.name": "cnn-bn", "evaluate-others": 1,
                  "output-dir": str(tmp_path / method)}
        return run_in_process(config, num_supernodes=4)

    fedavg_ft, fedbn, ditto = run("fedavg-ft"), run("fedbn"), run("ditto")
    for results in (fedbn, ditto):
        assert_accuracies(results["clients"], [0, 1, 2, 3], ["global_acc", "personal_acc"])
        assert len(results["round_history"]) == 2
        assert all(0.0 <= c["personal_acc_others"] <= 1.0 for c in results["clients"])
    # FedBN's model is the aggregate with the client's own batch norm: one model, both accuracies
    assert all(c["global_acc"] == c["personal_acc"] for c in fedbn["clients"])
    # it keeps its batch norm at home: less up than the same rounds of FedAvg
    assert 0 < fedbn["averages"]["bytes_up"] < fedavg_ft["averages"]["bytes_up"]
    # Ditto sends and receives what FedAvg + fine-tuning does; its personal models are its own
    assert [ditto["averages"][k] for k in NUMBERS] == [fedavg_ft["averages"][k] for k in NUMBERS]
    assert any(c["personal_acc"] != c["global_acc"] for c in ditto["clients"])


def test_dsd_on_the_synthetic_share_sends_each_client_its_own_images_and_counts_them(run_in_process, tmp_path):
    def run(name: str, share: bool) -> dict:
        config = {"method": "warmfed", "rounds": 0, "dsd.synthetic-share": share, "cache-dir": str(tmp_path / "cache"),
                  "output-dir": str(tmp_path / name)}
        return run_in_process(config, num_supernodes=2)

    plain, with_share = run("plain", False), run("share", True)
    images = 20  # the smoke preset's generate.images-per-client
    for before, after in zip(plain["clients"], with_share["clients"]):
        extra = after["bytes_down"] - before["bytes_down"]
        assert images * 3 * 16 * 16 + images * 8 <= extra <= images * 3 * 16 * 16 + images * 8 + 2_000
        assert after["bytes_up"] == before["bytes_up"] and after["global_acc"] == before["global_acc"]
    assert any(a["personal_acc"] != b["personal_acc"] for a, b in zip(plain["clients"], with_share["clients"]))
