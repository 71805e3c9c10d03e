"""Run the generative and data tests with the Hugging Face libraries at the floors pyproject.toml declares.

    .venv/bin/python scripts/check_floors.py

Installs `diffusers`, `accelerate`, `transformers`, `tokenizers`, `peft`, `datasets` and `opacus` at exactly
their declared minimum versions (without dependencies) into a temporary folder placed before the
virtualenv on PYTHONPATH, and runs the tests that exercise them. These are the floors that name a
feature the code needs; torch and torchvision are pinned to this machine's wheels, flwr to one
minor release, and the compiled numeric packages (numpy, pillow, scikit-learn, matplotlib) are
left at the installed versions. Exits non-zero if a floor cannot be installed or a test fails.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHECKED = ("diffusers", "accelerate", "transformers", "tokenizers", "peft", "datasets", "opacus")
TESTS = (
    "tests/test_generative_sd.py",
    "tests/test_generative_tiny.py",
    "tests/test_adapter.py",
    "tests/test_data_real.py",
    "tests/test_data_imagefolder.py",
    "tests/test_partition.py",
    "tests/test_presets.py",
    "tests/test_privacy.py",
)


def declared_floors() -> dict[str, str]:
    """name -> minimum version of every CHECKED dependency (each must declare one with >=)."""
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    floors = {}
    for requirement in dependencies:
        match = re.match(r"([A-Za-z0-9_.-]+)(?:\[[^]]*\])?\s*>=\s*([0-9][0-9.]*)", requirement)
        if match and match.group(1).lower() in CHECKED:
            floors[match.group(1).lower()] = match.group(2)
    missing = sorted(set(CHECKED) - set(floors))
    if missing:
        raise SystemExit(f"pyproject.toml declares no '>=' floor for {', '.join(missing)}")
    return floors


def main() -> int:
    floors = declared_floors()
    print("floors:", ", ".join(f"{name}=={version}" for name, version in floors.items()), flush=True)
    with tempfile.TemporaryDirectory(prefix="floors-") as target:
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", target,
             *(f"{name}=={version}" for name, version in floors.items())],
            check=True,
        )
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([target, os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
        versions = "; ".join(f"import {name}; print('{name}', {name}.__version__)" for name in floors)
        subprocess.run([sys.executable, "-c", versions], env=env, check=True)
        return subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *TESTS], env=env, cwd=ROOT
        ).returncode


if __name__ == "__main__":
    sys.exit(main())
