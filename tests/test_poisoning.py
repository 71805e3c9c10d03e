"""Clients that lie: the benchmark's poisoning attacks, the copy of the app that runs them, and the share check."""

from __future__ import annotations

import subprocess
import sys
from contextlib import nullcontext
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from warmfed_flwr.benchmark.matrix import robustness_matrix
from warmfed_flwr.benchmark.poisoning import Attack, poisoned_train, write_poisoned_app
from warmfed_flwr.benchmark.rows import honest_metrics
from warmfed_flwr.config import Settings
from warmfed_flwr.setting_checks import ConfigError
from warmfed_flwr.data import load_client_data, load_domain_set
from warmfed_flwr.data.digits_domains import load_digits_domains
from warmfed_flwr.data.types import ImageSplit
from warmfed_flwr.phases.rounds import make_aggregation
from warmfed_flwr.phases.share_check import check_shares
from warmfed_flwr.run.federation import ClientInfo

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def settings() -> Settings:
    return Settings.from_run_config({})


def test_attack_names_a_bad_kind_or_no_clients() -> None:
    with pytest.raises(ValueError, match="'flip-all': unknown"):
        Attack("flip-all", (3,))
    with pytest.raises(ValueError, match="partition ids"):
        Attack("label-shift", ())


def test_each_attack_poisons_the_training_split_only(settings: Settings) -> None:
    client = load_client_data(settings.data, 3)
    shifted = poisoned_train(client, Attack("label-shift", (3,)), settings)
    assert torch.equal(shifted.images, client.train.images)
    assert torch.equal(shifted.labels, (client.train.labels + 1) % 10)
    random = poisoned_train(client, Attack("label-random", (3,)), settings)
    assert torch.equal(random.labels, poisoned_train(client, Attack("label-random", (3,)), settings).labels)  # seeded
    assert 0.05 < float((random.labels == client.train.labels).float().mean()) < 0.3  # about 1 in 10 by chance
    borrowed = poisoned_train(client, Attack("other-domain", (3,)), settings)
    clean = load_domain_set(settings.data).domains[0].train  # the domain after the last one is the first
    assert len(borrowed) == min(len(client.train), len(clean))
    assert torch.equal(borrowed.images, clean.images[: len(borrowed)]) and torch.equal(borrowed.labels, clean.labels[: len(borrowed)])


def test_the_poisoned_app_copy_builds_its_client_app_and_leaves_the_project_alone(tmp_path: Path) -> None:
    out = write_poisoned_app(ROOT, Attack("label-shift", (1, 3)), tmp_path / "app")
    assert (out / "warmfed_flwr" / "client" / "app.py").is_file() and (out / "pyproject.toml").is_file()
    assert "Attack(kind='label-shift', clients=(1, 3))" in (out / "client_app.py").read_text()
    assert "poison" not in (ROOT / "client_app.py").read_text()
    probe = "import client_app, warmfed_flwr; print(type(client_app.app).__name__, warmfed_flwr.__file__)"
    printed = subprocess.run([sys.executable, "-c", probe], cwd=out, capture_output=True, text=True, check=True).stdout
    assert printed.split() == ["ClientApp", str(out / "warmfed_flwr" / "__init__.py")]


def fake_run(settings: Settings, num_classes: int, clients: int) -> SimpleNamespace:
    """What check_shares reads of a run: its settings, classes and a recorder with per-client details."""
    recorder = SimpleNamespace(clients={pid: SimpleNamespace(details={}) for pid in range(clients)},
                               phase=lambda name: nullcontext())
    return SimpleNamespace(settings=settings, num_classes=num_classes, recorder=recorder)


def real_shares(count_per_domain: int) -> list[tuple[ClientInfo, ImageSplit]]:
    """Four clients' 'shares': real digits of each domain (what a faithful adapter draws), true labels."""
    digits = load_digits_domains(16, seed=0)
    return [
        (ClientInfo(node_id=100 + pid, partition_id=pid, num_partitions=4, domain=domain.name, num_train=0, num_test=0,
                    class_names=digits.class_names),
         ImageSplit(domain.train.images[:count_per_domain], domain.train.labels[:count_per_domain]))
        for pid, domain in enumerate(digits.domains)
    ]


@pytest.mark.parametrize("mode", ["report", "enforce"])
def test_the_share_check_flags_a_shifted_share_and_enforce_leaves_it_out(settings: Settings, mode: str) -> None:
    checked = replace(settings, server=replace(settings.server, share_check=mode))
    shares = real_shares(200)
    liar, share = shares[1]
    shares[1] = (liar, ImageSplit(share.images, (share.labels + 1) % 10))
    run = fake_run(checked, 10, 4)
    kept = check_shares(run, shares)
    details = {pid: client.details["share_check"] for pid, client in run.recorder.clients.items()}
    assert [pid for pid, d in details.items() if d["flagged"]] == [1]
    assert details[1]["agreement"] < 0.2 and "median" in details[1]["reason"]
    assert [client.partition_id for client, _ in kept] == ([0, 2, 3] if mode == "enforce" else [0, 1, 2, 3])
    assert details[1]["action"] == ("left out of the pool" if mode == "enforce" else "pooled")


def test_honest_shares_are_not_flagged_and_off_checks_nothing(settings: Settings) -> None:
    checked = replace(settings, server=replace(settings.server, share_check="enforce"))
    run = fake_run(checked, 10, 4)
    shares = real_shares(200)
    assert len(check_shares(run, shares)) == 4
    assert not any(client.details["share_check"]["flagged"] for client in run.recorder.clients.values())
    off = fake_run(settings, 10, 4)
    assert check_shares(off, shares) is shares and all(not c.details for c in off.recorder.clients.values())


def test_share_check_settings_name_bad_values() -> None:
    with pytest.raises(ConfigError, match="server.share-check"):
        Settings.from_run_config({"server.share-check": "strict"})
    with pytest.raises(ConfigError, match="server.share-check-ratio"):
        Settings.from_run_config({"server.share-check-ratio": 1.5})
    with pytest.raises(ConfigError, match="train.aggregation"):
        Settings.from_run_config({"train.aggregation": "krum"})


def test_robust_aggregations_are_flower_strategies() -> None:
    median = make_aggregation(Settings.from_run_config({"method": "fedavg", "train.aggregation": "fedmedian"}), 4)
    trimmed = make_aggregation(Settings.from_run_config({"method": "fedavg", "train.aggregation": "fedtrimmedavg",
                                                         "train.trim-fraction": 0.25}), 4)
    assert type(median).__name__ == "FedMedian" and type(trimmed).__name__ == "FedTrimmedAvg" and trimmed.beta == 0.25


def test_the_robustness_matrix_and_its_honest_client_metrics() -> None:
    labels = [entry.label for entry in robustness_matrix()]
    assert "warmfed-check@label-shift" in labels and "fedmedian@other-domain" in labels and "warmfed" in labels
    clients = [
        {"partition_id": 0, "global_acc": 0.9, "personal_acc": 0.95, "details": {"share_check": {"flagged": False}}},
        {"partition_id": 1, "global_acc": 0.7, "personal_acc": 0.85, "details": {"share_check": {"flagged": True}}},
        {"partition_id": 3, "global_acc": 0.1, "personal_acc": 0.2, "details": {"share_check": {"flagged": True}}},
    ]
    metrics = honest_metrics(clients, {3})
    assert metrics["global_acc_honest"] == pytest.approx(0.8) and metrics["personal_acc_honest"] == pytest.approx(0.9)
    assert (metrics["share_flagged_honest"], metrics["share_flagged_attackers"]) == (1, 1)

