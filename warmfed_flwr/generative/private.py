"""Differentially private LoRA fits (`lora.dp-epsilon` > 0): DP-SGD through Opacus.

Each step draws its batch by Poisson sampling (every image independently, with probability
batch-size / N), clips each image's gradient of the trainable LoRA parameters to
`lora.dp-max-grad-norm` and adds Gaussian noise to their sum (Opacus's `GradSampleModule` and
`DPOptimizer`). The noise multiplier is calibrated so that all `lora.steps` steps together spend at
most (`lora.dp-epsilon`, `lora.dp-delta`) under Opacus's RDP accountant; the frozen base weights
never see a gradient. What the guarantee covers is each client's training images, as seen through
its adapter (and so through the synthetic images generated from it).

Opacus computes no per-sample gradients for peft's LoRA on an embedding table, so under DP the
`all` targets leave the class embedding out (`lora_targets`).
"""

from __future__ import annotations

import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterable, Iterator

import torch
from torch import nn

from warmfed_flwr.config import LoraSettings
from warmfed_flwr.logs import root_logging_kept
from warmfed_flwr.setting_checks import ConfigError

with root_logging_kept():  # Opacus configures the root logger when imported
    from opacus import GradSampleModule
    from opacus.accountants import RDPAccountant
    from opacus.accountants.utils import get_noise_multiplier
    from opacus.optimizers import DPOptimizer

ACCOUNTANT = "rdp"
# Opacus's RDP orders and larger ones: small budgets over few steps are tightest at high orders
ALPHAS = RDPAccountant.DEFAULT_ALPHAS + [64, 96, 128, 192, 256, 384, 512, 1024]


@dataclass(frozen=True)
class Budget:
    """A DP-SGD fit's noise and what it spends: (epsilon, delta) over `steps` steps at `sample_rate`."""

    noise_multiplier: float
    sample_rate: float
    steps: int
    epsilon: float
    delta: float


def sample_rate(lora: LoraSettings, num_examples: int) -> float:
    """The chance of each image to be in a step's batch: batch-size / N."""
    if lora.batch_size > num_examples:
        raise ConfigError(f"config key 'lora.batch-size': {lora.batch_size} is more than this client's {num_examples} "
                          "training images; a DP-SGD batch samples each image with probability batch-size / N")
    return lora.batch_size / num_examples


def dp_budget(lora: LoraSettings, num_examples: int) -> Budget:
    """The noise that keeps a fit of `lora.steps` steps on `num_examples` images within (dp-epsilon, dp-delta).

    A budget that no noise can meet with these steps and batch is a ConfigError naming the keys.
    """
    rate = sample_rate(lora, num_examples)
    try:
        noise = get_noise_multiplier(
            target_epsilon=lora.dp_epsilon, target_delta=lora.dp_delta, sample_rate=rate, steps=lora.steps,
            accountant=ACCOUNTANT, alphas=ALPHAS,
        )
    except ValueError as error:
        raise ConfigError(
            f"config keys 'lora.dp-epsilon' = {lora.dp_epsilon}, 'lora.dp-delta' = {lora.dp_delta}: not reachable with "
            f"'lora.steps' = {lora.steps} steps at 'lora.batch-size' = {lora.batch_size} of {num_examples} images "
            f"({error}); raise the epsilon, or lower the steps or the batch size"
        ) from error
    return Budget(noise, rate, lora.steps, spent_epsilon(noise, rate, lora.steps, lora.dp_delta), lora.dp_delta)


def spent_epsilon(noise_multiplier: float, rate: float, steps: int, delta: float) -> float:
    """The epsilon Opacus's RDP accountant gives `steps` DP-SGD steps at this noise and sample rate."""
    accountant = RDPAccountant()
    accountant.history = [(noise_multiplier, rate, steps)]
    return float(accountant.get_epsilon(delta, alphas=ALPHAS))


def make_private(
    model: nn.Module, optimizer: torch.optim.Optimizer, lora: LoraSettings, num_examples: int
) -> tuple[GradSampleModule, DPOptimizer, Budget]:
    """`model` wrapped for per-sample gradients and `optimizer` for clipping and noise, calibrated by `dp_budget`.

    Per-sample gradients come from the mean loss of a batch (`loss_reduction="mean"`).
    """
    budget = dp_budget(lora, num_examples)
    private_model = GradSampleModule(model, loss_reduction="mean")
    private_optimizer = DPOptimizer(
        optimizer,
        noise_multiplier=budget.noise_multiplier,
        max_grad_norm=lora.dp_max_grad_norm,
        expected_batch_size=lora.batch_size,
        loss_reduction="mean",
    )
    return private_model, private_optimizer, budget


@contextmanager
def fit_steps(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    lora: LoraSettings,
    count: int,
    plain_batches: Iterable[torch.Tensor],
    generator: torch.Generator | None = None,
) -> Iterator[tuple[nn.Module, torch.optim.Optimizer, Iterator[torch.Tensor]]]:
    """The model, optimizer and batches a LoRA fit on `count` images steps with: as given, or, with
    `lora.dp-epsilon` > 0, made private (`make_private`) with Poisson-sampled batches (possibly empty).
    Opacus's hooks come off the model when the fit ends."""
    if lora.dp_epsilon <= 0:
        yield model, optimizer, iter(plain_batches)
        return
    private_model, private_optimizer, budget = make_private(model, optimizer, lora, count)
    try:
        yield private_model, private_optimizer, poisson_batches(count, budget.sample_rate, lora.steps, generator)
    finally:
        private_model.remove_hooks()


def poisson_batches(
    num_examples: int, rate: float, steps: int, generator: torch.Generator | None = None
) -> Iterator[torch.Tensor]:
    """`steps` batches of indices, each image in each batch independently with probability `rate` (may be empty);
    from torch's global generator unless one is given."""
    for _ in range(steps):
        yield torch.nonzero(torch.rand(num_examples, generator=generator) < rate).flatten()


@contextmanager
def quiet_per_sample_hooks() -> Iterator[None]:
    """Around a backward pass: Opacus's per-sample hooks on the first layer fire although the (noisy) input needs
    no gradient, which torch warns about in every fit; that one warning is silenced here, nothing else."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Full backward hook is firing", category=UserWarning)
        yield
