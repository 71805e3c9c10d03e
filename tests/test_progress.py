"""Progress lines of long loops: a few per loop, with the value, speed and time left; silent without a label."""

from __future__ import annotations

import logging
import subprocess
import sys

import pytest
import torch

from warmfed_flwr.data.types import ImageSplit
from warmfed_flwr.learning.training import Schedule, run_epochs
from log_lines import debug_lines, repeated_app_lines
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


ROOT_HANDLERS_AFTER = "import logging, {module}; print(len(logging.getLogger().handlers))"


@pytest.mark.parametrize("module, handlers", [("opacus.utils.module_utils", 1), ("warmfed_flwr.generative.private", 0)])
def test_importing_opacus_through_the_app_leaves_the_root_logger_alone(module: str, handlers: int) -> None:
    """Opacus adds a root handler when imported (which printed every Flower record twice, DEBUG included); the app
    imports it with the root logger's handlers restored."""
    done = subprocess.run([sys.executable, "-c", ROOT_HANDLERS_AFTER.format(module=module)],
                          capture_output=True, text=True, check=True, timeout=120)
    assert int(done.stdout.split()[-1]) == handlers


def test_the_line_checks_find_a_line_printed_by_two_handlers_and_debug_lines() -> None:
    """The checks the end-to-end runs apply, on what `make run` printed before: one progress line in Flower's format
    and again in logging.basicConfig's, both through Ray, and Flower's DEBUG lines."""
    printed = "\n".join([
        "(ClientAppActor pid=4242) \x1b[92mINFO \x1b[0m:      [lora] partition 0: step 225/300, loss 0.1, 3 steps/s, 25 s left",
        "(ClientAppActor pid=4242) 12/07/2026 17:19:02:INFO:[lora] partition 0: step 225/300, loss 0.1, 3 steps/s, 25 s left",
        "\x1b[92mINFO \x1b[0m:      [lora] partition 1: step 225/300, loss 0.2, 3 steps/s, 25 s left",
        "12/07/2026 17:20:00:DEBUG:Triggered stop event",
        "plain text that no handler wrote",
    ])
    assert repeated_app_lines(printed) == {"[lora] partition 0: step 225/300, loss 0.1, 3 steps/s, 25 s left": 2}
    assert debug_lines(printed) == ["Triggered stop event"]
    assert repeated_app_lines(printed.split("\n", 1)[1]) == {}
