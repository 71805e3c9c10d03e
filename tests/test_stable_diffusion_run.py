"""The Stable Diffusion path whole: WarmFed (1 round + DSD) and FGL through the real ServerApp and ClientApp.

The backbone is a tiny random Stable Diffusion pipeline saved to disk and loaded by path, the data
an image folder with three classes (an odd count), the classifier ResNet-18. The kept adapters open
with diffusers' own `load_lora_weights`.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from diffusers import StableDiffusionPipeline

from warmfed_flwr.config import Settings
from warmfed_flwr.generative.sd_utils import initial_latents
from warmfed_flwr.server import warn_if_no_cuda

# scripts/ is on pytest's pythonpath (pyproject.toml)
from sd_pipeline_factory import build_tiny_pipeline

RESOLUTION = 16


@pytest.fixture(scope="module")
def pipeline_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("tiny-sd")
    build_tiny_pipeline(RESOLUTION).save_pretrained(str(folder), safe_serialization=True)
    return folder


def sd_run(pipeline_dir: Path, folder: Path, **overrides: object) -> dict[str, object]:
    return {
        "lora.backbone": "stable-diffusion", "lora.model-path": str(pipeline_dir), "lora.targets": "attention",
        "lora.steps": 2, "lora.batch-size": 4, "generate.images-per-client": 6, "generate.steps": 2,
        "generate.batch-size": 4, "data.name": "imagefolder", "data.root": str(folder), "data.classes": "0,1,2",
        "data.image-size": RESOLUTION, "data.min-train-images": 4, "model.name": "resnet18", **overrides,
    }


def check_completed(results: dict, phases: list[str]) -> None:
    assert results["failures"] == [] and [p["name"] for p in results["phases"]] == phases
    assert results["class_names"] == ["0", "1", "2"]
    for client in results["clients"]:
        assert 0.0 <= client["global_acc"] <= 1.0 and 0.0 <= client["personal_acc"] <= 1.0
        assert client["details"]["synthetic_images"] == 6


def test_warmfed_on_stable_diffusion_keeps_adapters_diffusers_opens(
    run_in_process, two_domain_folder, pipeline_dir, tmp_path
):
    results = run_in_process(sd_run(pipeline_dir, two_domain_folder, method="warmfed", rounds=1,
                                    **{"keep-adapters": True}), num_supernodes=2)
    check_completed(results, ["discover", "lora", "warmstart-generate", "warmstart-train", "rounds", "dsd"])
    for client in results["clients"]:
        # attention LoRA of rank 8 on the tiny UNet's two cross-attention blocks (A and B of 4 projections each)
        assert 1_000 < client["details"]["adapter_bytes"] < client["bytes_up"]
    assert [r["round"] for r in results["round_history"]] == [1]

    pipeline = StableDiffusionPipeline.from_pretrained(str(pipeline_dir), safety_checker=None,
                                                       requires_safety_checker=False)
    pipeline.set_progress_bar_config(disable=True)
    latents = initial_latents(pipeline, 1, torch.Generator().manual_seed(0))

    def sample() -> torch.Tensor:
        return pipeline(["a photo of a 1"], height=RESOLUTION, width=RESOLUTION, num_inference_steps=2,
                        latents=latents, output_type="pt").images

    base = sample()
    for pid in (0, 1):
        folder = tmp_path / "run" / "adapters" / f"partition-{pid}"
        assert (folder / "pytorch_lora_weights.safetensors").is_file()
        pipeline.load_lora_weights(str(folder), adapter_name=f"client{pid}")
        pipeline.set_adapters([f"client{pid}"])
        assert (sample() - base).abs().max() > 1e-4  # the client's adapter changes what the pipeline draws
        pipeline.unload_lora_weights()


def test_fgl_on_stable_diffusion(run_in_process, two_domain_folder, pipeline_dir):
    results = run_in_process(sd_run(pipeline_dir, two_domain_folder, method="fgl", rounds=0), num_supernodes=2)
    check_completed(results, ["discover", "warmstart-generate", "warmstart-train", "dsd"])
    assert all("adapter_bytes" not in client["details"] for client in results["clients"])


def test_a_stable_diffusion_run_without_cuda_says_so_once(monkeypatch, caplog):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with caplog.at_level(logging.WARNING, logger="flwr"):
        warn_if_no_cuda(Settings.from_run_config({"lora.backbone": "stable-diffusion"}))
        warn_if_no_cuda(Settings.from_run_config({"lora.backbone": "tiny"}))
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "no CUDA device" in warnings[0] and "300x slower" in warnings[0]
