"""The GPU scripts (gpu_check.sh, gpu_phase_costs.py) run on a CPU with --small, without the packages a bare GPU machine lacks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PHASES = (
    "build diffusion",
    "lora client-0",
    "lora client-1",
    "generate client-0",
    "generate client-1",
    "release diffusion",
    "global resnet18",
    "dsd client-0",
    "dsd client-1",
)
ABSENT_ON_GPU_MACHINE = ("flwr", "ray", "datasets", "flwr_datasets")
IMPORT_BLOCKER = f"""
import sys

class AbsentOnGpuMachine:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {ABSENT_ON_GPU_MACHINE!r}:
            raise ModuleNotFoundError(f"{{name}} is not installed on the GPU machine")
        return None

sys.meta_path.insert(0, AbsentOnGpuMachine())
"""


def test_small_gpu_check_prints_every_phase_and_writes_json(tmp_path: Path) -> None:
    (tmp_path / "sitecustomize.py").write_text(IMPORT_BLOCKER)
    out = tmp_path / "check.json"
    env = {**os.environ, "PYTHON": sys.executable, "PYTHONPATH": str(tmp_path), "OMP_NUM_THREADS": "1"}

    result = subprocess.run(
        [str(REPO / "scripts" / "gpu_check.sh"), "--small", "--out", str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )

    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    for phase in PHASES:
        assert any(line.startswith(phase) and line.rstrip().endswith(("-", "MiB")) for line in lines), phase
    assert any(line.startswith("device: ") for line in lines)
    written = json.loads(out.read_text())
    assert [row["phase"] for row in written["phases"]] == list(PHASES)
    assert all(row["seconds"] > 0 for row in written["phases"])
    assert written["synthetic_nonfinite_pixels"] == 0


def test_phase_costs_project_each_preset_from_its_own_counts(tmp_path: Path) -> None:
    (tmp_path / "sitecustomize.py").write_text(IMPORT_BLOCKER)
    out = tmp_path / "costs.json"
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{REPO}", "OMP_NUM_THREADS": "1"}
    presets = [REPO / "conf" / "camelyon17.toml", REPO / "conf" / "domainnet-60.toml"]

    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "gpu_phase_costs.py"), "--small", "--lora-steps", "2",
         "--classifier-images", "8", *map(str, presets), "--out", str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )

    assert result.returncode == 0, result.stderr[-3000:]
    written = json.loads(out.read_text())["presets"]
    camelyon, domainnet60 = written["camelyon17.toml"], written["domainnet-60.toml"]
    for preset in (camelyon, domainnet60):
        assert preset["measured"]["lora_step"]["units"] == 2
        assert preset["measured"]["generated_image"]["units"] == 50  # generate.batch-size of both presets
        assert all(cost["seconds"] > 0 for cost in preset["measured"].values())
    image_s = domainnet60["measured"]["generated_image"]["per_unit_s"]
    # 6 domains x 10 clients x 100 images (domainnet-60); 5 hospitals x 500 images (camelyon17)
    assert domainnet60["projected"]["generate_s_all_clients"] == pytest.approx(6000 * image_s)
    assert camelyon["projected"]["generate_s_all_clients"] == pytest.approx(
        2500 * camelyon["measured"]["generated_image"]["per_unit_s"]
    )
    assert domainnet60["projected"]["lora_s_per_client"] == pytest.approx(
        400 * domainnet60["measured"]["lora_step"]["per_unit_s"]
    )
