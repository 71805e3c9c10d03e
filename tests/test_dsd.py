"""DSD loss and schedule."""

import math

import pytest
import torch
from torch.nn import functional as F

from warmfed_flwr.config import DsdSettings
from warmfed_flwr.data.types import ImageSplit
from warmfed_flwr.learning.dsd import choose_teacher, distillation_weight, dsd_loss, train_personalized
from warmfed_flwr.learning.models import build_classifier
from warmfed_flwr.learning.training import Schedule


def _logits(seed, n=8, c=5):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, c, generator=g)


def test_zero_weight_is_cross_entropy():
    s, t = _logits(0), _logits(1)
    y = torch.arange(8) % 5
    assert torch.allclose(dsd_loss(s, t, y, 0.0, 2.0, "confidence"), F.cross_entropy(s, y))


def test_teacher_confidence_zero_reduces_to_cross_entropy():
    s = _logits(0)
    y = torch.zeros(8, dtype=torch.long)
    teacher = torch.full((8, 5), 0.0)
    teacher[:, 1] = 50.0  # the teacher puts ~all mass on a wrong class: w(x) ~ 0
    loss = dsd_loss(s, teacher, y, 1.0, 1.0, "confidence")
    assert torch.allclose(loss, F.cross_entropy(s, y), atol=1e-6)


def test_constant_mode_uses_full_kl_with_temperature_squared():
    s, t = _logits(0), _logits(1)
    y = torch.arange(8) % 5
    temp = 3.0
    kl = F.kl_div(F.log_softmax(s / temp, 1), F.log_softmax(t / temp, 1), log_target=True, reduction="batchmean")
    expected = F.cross_entropy(s, y) + 0.5 * kl * temp**2
    assert torch.allclose(dsd_loss(s, t, y, 0.5, temp, "constant"), expected, atol=1e-6)


def test_confidence_weights_each_sample_by_teacher_true_class_probability():
    s, t = _logits(0), _logits(1)
    y = torch.arange(8) % 5
    w = F.softmax(t, 1)[torch.arange(8), y]
    per_kl = (F.softmax(t, 1) * (F.log_softmax(t, 1) - F.log_softmax(s, 1))).sum(1)
    expected = F.cross_entropy(s, y) + (w * per_kl).mean()
    assert torch.allclose(dsd_loss(s, t, y, 1.0, 1.0, "confidence"), expected, atol=1e-6)


def test_no_gradient_reaches_the_teacher():
    s = _logits(0).requires_grad_(True)
    t = _logits(1).requires_grad_(True)
    dsd_loss(s, t, torch.arange(8) % 5, 1.0, 2.0, "confidence").backward()
    assert s.grad is not None and t.grad is None


def test_schedule():
    assert distillation_weight(2.0, 0, 10, "confidence") == pytest.approx(2.0)
    assert distillation_weight(2.0, 5, 10, "confidence") == pytest.approx(1.0)
    assert distillation_weight(2.0, 9, 10, "confidence") == pytest.approx(2.0 * 0.5 * (1 + math.cos(math.pi * 0.9)))
    assert distillation_weight(2.0, 7, 10, "constant") == 2.0
    assert distillation_weight(2.0, 0, 10, "none") == 0.0


def test_train_personalized_leaves_teacher_untouched_and_changes_student():
    torch.manual_seed(0)
    split = ImageSplit(torch.rand(32, 3, 16, 16), torch.arange(32) % 4)
    teacher = build_classifier("cnn", 4, 16, seed=0)
    before = [p.detach().clone() for p in teacher.parameters()]
    dsd = DsdSettings("confidence", 1.0, 2.0, 2, 0.05, "global", synthetic_share=False, validation_fraction=0.0)
    student = train_personalized(teacher, split, dsd, Schedule(dsd.epochs, dsd.lr, 8, 0, torch.device("cpu")))
    assert all(torch.equal(a, b) for a, b in zip(before, teacher.parameters()))
    assert any(not torch.equal(a, b) for a, b in zip(before, student.parameters()))


def test_the_teacher_of_each_sample_is_whichever_gives_its_label_the_higher_probability():
    labels = torch.tensor([0, 1])
    global_logits = torch.tensor([[5.0, 0.0], [5.0, 0.0]])  # right on the first sample, wrong on the second
    self_logits = torch.tensor([[0.0, 5.0], [0.0, 5.0]])  # wrong on the first, right on the second
    chosen = choose_teacher(global_logits, self_logits, labels)
    assert torch.equal(chosen, torch.tensor([[5.0, 0.0], [0.0, 5.0]]))


def test_global_or_self_distils_from_the_running_average_where_it_knows_better():
    torch.manual_seed(0)
    split = ImageSplit(torch.rand(32, 3, 16, 16), torch.arange(32) % 4)
    teacher = build_classifier("cnn", 4, 16, seed=0)
    schedule = Schedule(3, 0.05, 8, 0, torch.device("cpu"))
    def teacher_choice(teacher_key: str) -> DsdSettings:
        return DsdSettings("constant", 1.0, 2.0, 3, 0.05, teacher_key, synthetic_share=False, validation_fraction=0.0)

    by_global = train_personalized(teacher, split, teacher_choice("global"), schedule)
    by_either = train_personalized(teacher, split, teacher_choice("global-or-self"), schedule)
    assert any(not torch.equal(a, b) for a, b in zip(by_global.parameters(), by_either.parameters()))
