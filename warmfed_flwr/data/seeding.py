"""Independent, reproducible random streams derived from the run seed."""

from __future__ import annotations

import numpy as np


def derived_seed(*parts: int) -> int:
    """A 32-bit seed determined by `parts` (e.g. run seed and domain index), unrelated for different parts."""
    return int(np.random.SeedSequence(list(parts)).generate_state(1)[0])
