"""The app's logger for modules that must import without Flower (scripts/gpu_check.py runs where flwr is absent),
and progress lines for long loops (LoRA fits, DSD epochs, generation, warm-start training).

It is a child of Flower's `flwr` logger, so under Flower its records go through Flower's handlers and
format: a client's lines reach `flwr run --stream` through Ray's log forwarding in a simulation.
"""

from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from typing import Any, Iterator

logger = logging.getLogger("flwr.warmfed")


@contextmanager
def root_logging_kept() -> Iterator[None]:
    """Undo what the code run inside does to the root logger's handlers and level.

    For imports that configure logging as a side effect: Opacus calls `logging.basicConfig` when imported, and
    the root handler it adds would print every record of Flower's logger (DEBUG included) a second time, in its
    own format.
    """
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        yield
    finally:
        for handler in [h for h in root.handlers if h not in handlers]:
            root.removeHandler(handler)
        root.setLevel(level)


class Progress:
    """Logs a long loop a few times while it runs: how far it is, a value such as the loss, its speed, time left.

    `update(done, ...)` is cheap between the log points: tensors passed as values are read only
    when a line is written. A label of None makes it silent (tests, scripts).
    """

    def __init__(self, label: str | None, total: int, unit: str = "step", times: int = 4) -> None:
        self.label, self.total, self.unit = label, total, unit
        self.marks = sorted({max(1, round(total * k / times)) for k in range(1, times + 1)})
        self.started = time.perf_counter()

    def update(self, done: int, **values: Any) -> None:
        """Record that `done` of `total` units are finished; log when that reaches the next mark."""
        if self.label is None or not self.marks or done < self.marks[0]:
            return
        self.marks = [mark for mark in self.marks if mark > done]
        elapsed = time.perf_counter() - self.started
        shown = "".join(f", {name} {float(value):.4g}" for name, value in values.items())
        left = elapsed / done * (self.total - done)
        speed = f"{done / elapsed:.3g} {self.unit}s/s" if elapsed < done else f"{elapsed / done:.3g} s/{self.unit}"
        logger.info("%s: %s %d/%d%s, %s, %.0f s left", self.label, self.unit, done, self.total, shown, speed, left)
