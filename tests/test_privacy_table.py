"""scripts/privacy_table.py: which runs the table asks for, and how it summarises them."""

from __future__ import annotations

import pytest

from privacy_table import COLUMNS, run_config, summary
from warmfed_flwr.config import Settings


def test_a_private_cell_sends_no_label_counts_and_the_off_cell_is_the_default_run():
    private = Settings.from_run_config(run_config(seed=1, epsilon=8.0))
    assert private.lora.dp_epsilon == 8.0 and not private.lora.send_label_counts and private.keep_adapters
    default = Settings.from_run_config({})
    off = Settings.from_run_config(run_config(seed=0, epsilon=0.0))
    assert off.lora == default.lora and off.generate == default.generate and off.seed == 0


@pytest.mark.parametrize("epsilon", [8.0, 1.0])
def test_the_summary_gives_each_epsilon_its_mean_and_spread_over_seeds(epsilon: float):
    rows = [{column: "0.5" for column in COLUMNS} | {"seed": str(s), "epsilon": "0.0"} for s in (0, 1)]
    rows += [{column: str(0.6 + 0.1 * s) for column in COLUMNS} | {"seed": str(s), "epsilon": str(epsilon)} for s in (0, 1)]
    lines = summary(rows).splitlines()
    assert lines[2].startswith("| off | 2 | 0.500 ± 0.000")
    assert lines[3].startswith(f"| {epsilon:g} | 2 | 0.650 ± 0.071")
