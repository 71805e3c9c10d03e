"""scripts/gpu_run.sh --small: a whole measured `flwr run` of WarmFed on the Stable Diffusion path, on a CPU.

A stand-in `nvidia-smi` on PATH answers the two queries the script samples (the GPU's utilisation and
memory, and each process's GPU memory, naming the script's own process), so the GPU bookkeeping is
exercised without a GPU; Ray and the launcher never ask it (the GPU share is given).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FAKE_NVIDIA_SMI = """#!/bin/sh
case "$1" in
  --query-gpu=*) echo "37, 2048" ;;
  --query-compute-apps=*) echo "$PPID, 512" ;;
esac
"""


def test_small_gpu_run_measures_a_whole_run_and_writes_every_figure(tmp_path: Path, flwr_cli_env: dict[str, str]) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "nvidia-smi").write_text(FAKE_NVIDIA_SMI)
    (bin_dir / "nvidia-smi").chmod(0o755)
    env = {**flwr_cli_env, "PATH": f"{bin_dir}{os.pathsep}{flwr_cli_env['PATH']}"}
    out = tmp_path / "out"

    subprocess.run([str(ROOT / "scripts" / "gpu_run.sh"), str(out), "--small"], env=env, cwd=ROOT, check=True,
                   timeout=600)

    record = json.loads((out / "gpu_run.json").read_text())
    assert record["small"] is True and "sd_tests_exit_code" not in record
    assert record["unit_flops"]["unet_step"] > 0 and record["unit_flops"]["vae_decode"] > 0
    assert record["peaks"]["device"] == "cpu" and record["peaks"]["measured_matmul_flops"] > 0
    run = record["runs"]["4-clients"]
    assert run["shape"]["clients"] == 4 and run["failures"] == []
    assert list(run["phases"]) == ["discover", "lora", "warmstart-generate", "warmstart-train", "rounds", "dsd"]
    assert run["lora_steps_per_s_per_fit"] > 0 and run["lora_steps_per_s_phase"] > 0
    assert run["generated_images_per_s"] > 0
    assert 0 < run["generation_fraction_of_matmul_peak"] < 1 and run["generation_mfu_nominal"] is None
    # the flops of one image: 2 sampler steps, each running the UNet twice (guidance 7.5), and one VAE decode
    assert run["flops_per_image"] == 4 * record["unit_flops"]["unet_step"] + record["unit_flops"]["vae_decode"]
    gpu = run["gpu"]
    assert gpu["nvidia_smi"] is True and gpu["samples"] > 0
    assert gpu["utilisation_mean_percent"] == 37.0 and gpu["memory_used_peak_gib"] == 2.0
    assert [p["peak_gib"] for p in gpu["process_peaks_gib"]] == [0.5]
    assert "gpu_run.py" in gpu["process_peaks_gib"][0]["label"]
    assert (out / "runs" / "4-clients" / "results.json").is_file()
