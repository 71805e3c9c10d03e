"""Differentially private adapters: the accountant's numbers, clipping, the keys' checks, both backbones."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from warmfed_flwr.config import ConfigError, Settings
from warmfed_flwr.generative.base import ClassLabels
from warmfed_flwr.generative.private import ALPHAS, dp_budget, make_private, quiet_per_sample_hooks, spent_epsilon
from warmfed_flwr.generative.stable_diffusion import StableDiffusionBackbone
from warmfed_flwr.generative.tiny import load_tiny_backbone
from warmfed_flwr.generative.tiny_training import denoising_loss

# scripts/ is on pytest's pythonpath (pyproject.toml)
from sd_pipeline_factory import build_tiny_pipeline

PRIVATE = {"lora.dp-epsilon": 8.0, "lora.send-label-counts": False}


def private_lora(**overrides: object):
    return Settings.from_run_config(PRIVATE | overrides).lora


def test_full_batch_steps_cost_what_the_gaussian_mechanism_costs():
    """With every image in every batch (sample rate 1) each step is the Gaussian mechanism: RDP T * a / (2 s^2),
    converted to (epsilon, delta) as Balle et al. (2020) do; Opacus must give the same."""
    noise, steps, delta = 2.0, 10, 1e-5
    orders = np.array(ALPHAS, dtype=float)
    rdp = steps * orders / (2 * noise**2)
    expected = np.min(rdp - (np.log(delta) + np.log(orders)) / (orders - 1) + np.log((orders - 1) / orders))
    assert spent_epsilon(noise, 1.0, steps, delta) == pytest.approx(expected, rel=1e-6)


def test_the_noise_is_calibrated_to_spend_at_most_the_budget():
    budgets = {eps: dp_budget(private_lora(**{"lora.dp-epsilon": eps}), num_examples=270) for eps in (1.0, 3.0, 8.0)}
    for epsilon, budget in budgets.items():
        assert 0.97 * epsilon <= budget.epsilon <= epsilon
        assert (budget.sample_rate, budget.steps, budget.delta) == (16 / 270, 300, 1e-5)
    assert budgets[1.0].noise_multiplier > budgets[3.0].noise_multiplier > budgets[8.0].noise_multiplier > 0


def test_an_unreachable_budget_and_a_batch_larger_than_the_data_name_the_keys():
    with pytest.raises(ConfigError, match="'lora.dp-epsilon'.*'lora.steps'.*'lora.batch-size'"):
        dp_budget(private_lora(**{"lora.dp-epsilon": 1e-9}), num_examples=270)
    with pytest.raises(ConfigError, match="'lora.batch-size'"):
        dp_budget(private_lora(), num_examples=10)


def test_exact_label_counts_are_refused_with_differential_privacy():
    with pytest.raises(ConfigError, match="'lora.send-label-counts'.*'lora.dp-epsilon'"):
        Settings.from_run_config({"lora.dp-epsilon": 8.0})


def test_every_images_gradient_is_clipped_to_the_configured_norm():
    backbone = load_tiny_backbone()
    lora = private_lora(**{"lora.dp-max-grad-norm": 1e-4})
    model = backbone._copy_with_lora(lora)
    trainable = [p for p in model.parameters() if p.requires_grad]
    private_model, optimizer, _ = make_private(model, torch.optim.AdamW(trainable, lr=lora.lr), lora, num_examples=270)
    torch.manual_seed(0)
    images, labels = torch.rand(4, 3, 16, 16) * 2 - 1, torch.arange(4)
    with quiet_per_sample_hooks():
        denoising_loss(private_model, backbone.scheduler, images, labels, backbone.null_label).backward()
    raw = torch.sqrt(sum(p.grad_sample.flatten(1).pow(2).sum(dim=1) for p in trainable))
    assert float(raw.min()) > 10 * lora.dp_max_grad_norm  # clipping has something to do
    optimizer.clip_and_accumulate()
    summed = torch.sqrt(sum(p.summed_grad.pow(2).sum() for p in trainable))
    assert float(summed) <= len(images) * lora.dp_max_grad_norm * (1 + 1e-4)
    private_model.remove_hooks()


def test_a_private_tiny_adapter_leaves_the_class_embedding_and_differs_from_the_plain_one():
    backbone = load_tiny_backbone()
    generator = torch.Generator().manual_seed(0)
    images, labels = torch.rand(40, 3, 16, 16, generator=generator), torch.arange(40) % 10
    targets = ClassLabels(labels, tuple(str(i) for i in range(10)))
    lora = private_lora(**{"lora.steps": 5})
    private = backbone.fit_lora(images, targets, lora, seed=0)
    again = backbone.fit_lora(images, targets, lora, seed=0)
    plain = backbone.fit_lora(images, targets, dataclasses.replace(lora, dp_epsilon=0.0), seed=0)
    assert set(private) == set(backbone.adapter_shapes(lora)) and not any("class_embedding" in k for k in private)
    assert any("class_embedding" in k for k in plain)
    assert all(np.array_equal(private[k], again[k]) for k in private)  # seeded noise: reproducible
    assert any(not np.array_equal(private[k], plain[k]) for k in private)


def test_the_stable_diffusion_backbone_fits_a_private_adapter():
    backbone = StableDiffusionBackbone(build_tiny_pipeline(16))
    settings = Settings.from_run_config(
        PRIVATE | {"lora.backbone": "stable-diffusion", "lora.steps": 3, "lora.batch-size": 4, "lora.lr": 0.01}
    )
    generator = torch.Generator().manual_seed(1)
    images, labels = torch.rand(8, 3, 24, 24, generator=generator), torch.arange(8) % 2
    adapter = backbone.fit_lora(images, ClassLabels(labels, ["cat", "dog"]), settings.lora, seed=0)
    plain = backbone.fit_lora(images, ClassLabels(labels, ["cat", "dog"]), dataclasses.replace(settings.lora, dp_epsilon=0.0), seed=0)
    assert {k: v.shape for k, v in adapter.items()} == backbone.adapter_shapes(settings.lora)
    assert any(not np.array_equal(adapter[k], plain[k]) for k in adapter)
    assert not any(hasattr(p, "grad_sample") and p.grad_sample is not None for p in backbone.pipeline.unet.parameters())
