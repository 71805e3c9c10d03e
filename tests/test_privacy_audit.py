"""scripts/privacy_audit.py: planted copies are flagged, an overfitted adapter gives its members away, a run is audited."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from privacy_audit import audit, copy_statistics, denoising_losses, flat, membership_auc
from warmfed_flwr.config import Settings
from warmfed_flwr.data.digits_domains import load_digits_domains
from warmfed_flwr.data.types import ImageSplit
from warmfed_flwr.generative.base import ClassLabels
from warmfed_flwr.generative.tiny import load_tiny_backbone

DOMAIN = load_digits_domains(16, seed=0).domains[2]  # textured: the most varied images


def test_a_pool_that_contains_training_images_is_flagged_and_one_of_other_images_is_not():
    train, held_out = flat(DOMAIN.train.images[:150]), flat(DOMAIN.train.images[150:])
    test, unseen = held_out[:60], held_out[60:]
    planted = torch.cat([train[:50], unseen[:50]])
    flagged = copy_statistics(planted, train, test)
    clean = copy_statistics(unseen, train, test)
    assert 0.45 <= flagged["near_copy_share"] <= 0.55 and flagged["ratio_p05"] < 1e-6
    assert clean["near_copy_share"] <= 0.05 and clean["ratio_median"] > 0.5


def test_an_adapter_fitted_hard_on_a_few_images_gives_its_members_away():
    backbone = load_tiny_backbone()
    members = ImageSplit(DOMAIN.train.images[:24], DOMAIN.train.labels[:24])
    others = ImageSplit(DOMAIN.test.images[:24], DOMAIN.test.labels[:24])
    lora = Settings.from_run_config({"lora.steps": 200, "lora.lr": 0.01, "lora.batch-size": 8}).lora
    adapter = backbone.fit_lora(members.images, ClassLabels(members.labels, tuple("0123456789")), lora, seed=0)
    attack = membership_auc(denoising_losses(backbone, adapter, members), denoising_losses(backbone, adapter, others))
    base = membership_auc(denoising_losses(backbone, None, members), denoising_losses(backbone, None, others))
    assert attack > 0.65 and attack > base + 0.2  # measured 0.71 against the base's 0.45 (it saw neither group)


def test_a_finished_run_is_audited_per_client(warmfed_run_on_two_folders: Path, tmp_path: Path):
    report = audit(warmfed_run_on_two_folders, tmp_path / "privacy")
    assert set(report["clients"]) == {"0", "1"}
    for numbers in report["clients"].values():
        assert 0.0 <= numbers["pixels"]["near_copy_share"] <= 1.0 and numbers["features"]["ratio_median"] > 0
        assert 0.0 <= numbers["membership_auc"] <= 1.0
    assert json.loads((tmp_path / "privacy" / "privacy.json").read_text()) == report
    assert (tmp_path / "privacy" / "closest-pairs.png").stat().st_size > 0
