"""Classifier factory and the shared train/evaluate loop."""

import torch

from warmfed_flwr.data.types import ImageSplit
from warmfed_flwr.learning.models import build_classifier
from warmfed_flwr.learning.training import Schedule, evaluate_accuracy, random_shift, run_epochs, train_supervised


def _separable(n=200, classes=4, seed=0):
    """Each class is a bright square in its own quadrant on noise: learnable in a few epochs."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % classes
    images = torch.rand(n, 3, 16, 16, generator=g) * 0.3
    for i, y in enumerate(labels.tolist()):
        r, c = divmod(y, 2)
        images[i, :, r * 8 : r * 8 + 8, c * 8 : c * 8 + 8] += 0.7
    return ImageSplit(images.clamp(0, 1), labels)


def test_same_seed_same_initialisation():
    a, b = build_classifier("cnn", 10, 16, seed=3), build_classifier("cnn", 10, 16, seed=3)
    c = build_classifier("cnn", 10, 16, seed=4)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert any(not torch.equal(p, q) for p, q in zip(a.parameters(), c.parameters()))


def test_resnet18_runs_on_small_images():
    model = build_classifier("resnet18", 7, 16)
    assert model(torch.rand(2, 3, 16, 16)).shape == (2, 7)


def test_training_learns():
    train, test = _separable(seed=0), _separable(seed=1)
    model = build_classifier("cnn", 4, 16, seed=0)
    device = torch.device("cpu")
    first = run_epochs(model, train, Schedule(1, 0.05, 32, 0, device))
    last = train_supervised(model, train, Schedule(5, 0.05, 32, 0, device))
    assert last < first
    assert evaluate_accuracy(model, test, device) > 0.9


def test_fedprox_term_keeps_weights_closer_to_start():
    train = _separable()
    device = torch.device("cpu")
    start = build_classifier("cnn", 4, 16, seed=0)
    init = [p.detach().clone() for p in start.parameters()]
    plain, prox = build_classifier("cnn", 4, 16, seed=0), build_classifier("cnn", 4, 16, seed=0)
    train_supervised(plain, train, Schedule(3, 0.05, 32, 0, device))
    train_supervised(prox, train, Schedule(3, 0.05, 32, 0, device), proximal_mu=10.0)

    def drift(m):
        return sum(float(((p.detach() - q) ** 2).sum()) for p, q in zip(m.parameters(), init))

    assert drift(prox) < drift(plain)


def test_random_shift_moves_images_by_at_most_max_shift_and_is_seeded():
    images = torch.zeros(64, 3, 8, 8)
    images[:, :, 3:5, 3:5] = 1.0  # a 2x2 bright square in the middle
    shifted = random_shift(images, 2, torch.Generator().manual_seed(0))
    assert shifted.shape == images.shape
    rows = [int(torch.nonzero(img[0].sum(dim=1))[0]) for img in shifted]
    cols = [int(torch.nonzero(img[0].sum(dim=0))[0]) for img in shifted]
    assert set(rows) <= set(range(1, 6)) and set(cols) <= set(range(1, 6))
    assert len(set(zip(rows, cols))) > 5, "offsets are drawn per image"
    assert torch.equal(shifted, random_shift(images, 2, torch.Generator().manual_seed(0)))


def test_augmented_training_is_reproducible_and_differs_from_plain():
    train = _separable()
    device = torch.device("cpu")
    runs = [build_classifier("cnn", 4, 16, seed=0) for _ in range(3)]
    for model, shift in zip(runs, (1, 1, 0)):
        train_supervised(model, train, Schedule(2, 0.05, 32, 0, device, max_shift=shift))
    first, again, plain = ([p.detach() for p in m.parameters()] for m in runs)
    assert all(torch.equal(p, q) for p, q in zip(first, again))
    assert any(not torch.equal(p, q) for p, q in zip(first, plain))
