"""Run-config presets: the TOML files under conf/, flattened the way `flwr run --run-config FILE` does."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from flwr.common.config import flatten_dict

from warmfed_flwr.config import merge_run_config


def load_preset(path: str | Path) -> dict[str, Any]:
    """The preset's keys, flattened to dotted run-config keys and checked against the known keys."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError as err:
        raise FileNotFoundError(f"preset file {path} does not exist") from err
    except tomllib.TOMLDecodeError as err:
        raise ValueError(f"preset file {path} is not valid TOML: {err}") from err
    flat = dict(flatten_dict(raw))
    merge_run_config(flat)  # raises a ConfigError naming any unknown or mistyped key
    return flat
