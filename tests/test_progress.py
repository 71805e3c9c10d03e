"""Progress lines of long loops: a few per loop, with the value, speed and time left; silent without a label."""

from __future__ import annotations

import logging

import pytest
import torch

from warmfed_flwr.data.types import ImageSplit
from warmfed_flwr.learning.training import Schedule, run_epochs
from warmfed_flwr.logs import Progress


def lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.name == "flwr.warmfed"]


def test_four_lines_per_loop_whatever_the_step_size(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="flwr.warmfed"):
        progress = Progress("[lora] partition 3", 300)
        for step in range(300):
            progress.update(step + 1, loss=torch.tensor(0.25))
        images = Progress("[warmstart-generate] partition 0", 800, unit="image")
        for done in (300, 600, 800):  # batches of 300 cross the marks 200, 400, 600, 800
            images.update(done)
        Progress(None, 10).update(10)
    logged = lines(caplog)
    assert [line.split(",")[0] for line in logged[:4]] == [f"[lora] partition 3: step {n}/300" for n in (75, 150, 225, 300)]
    assert all("loss 0.25" in line and "left" in line for line in logged[:4])
    assert [line.split(",")[0] for line in logged[4:]] == [
        "[warmstart-generate] partition 0: image 300/800", "[warmstart-generate] partition 0: image 600/800",
        "[warmstart-generate] partition 0: image 800/800"]
    assert len(logged) == 7  # the unlabelled loop is silent


def test_training_epochs_report_their_loss(caplog: pytest.LogCaptureFixture) -> None:
    split = ImageSplit(torch.rand(8, 3, 8, 8), torch.tensor([0, 1] * 4))
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(192, 2))
    with caplog.at_level(logging.INFO, logger="flwr.warmfed"):
        schedule = Schedule(4, 0.1, 4, 0, torch.device("cpu"))
        loss = run_epochs(model, split, schedule, progress=Progress("[dsd] partition 1", 4, "epoch"))
    logged = lines(caplog)
    assert len(logged) == 4 and logged[-1].startswith(f"[dsd] partition 1: epoch 4/4, loss {loss:.4g}")
