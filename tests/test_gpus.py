"""GPU shares for simulated clients, with nvidia-smi mocked: the launcher gives clients a GPU when there is one."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from warmfed_flwr import launch
from warmfed_flwr.config import Settings
from warmfed_flwr.runtime import gpus
from warmfed_flwr.runtime.gpus import Gpu, client_gpu_share, visible_gpus

H100 = "0, GPU-aaaa, NVIDIA H100 80GB HBM3, 81559\n1, GPU-bbbb, NVIDIA H100 80GB HBM3, 81559\n"


def fake_nvidia_smi(monkeypatch: pytest.MonkeyPatch, output: str | None) -> None:
    """nvidia-smi printing `output`, or no nvidia-smi at all (None)."""
    monkeypatch.setattr(gpus.shutil, "which", lambda name: None if output is None else f"/usr/bin/{name}")
    monkeypatch.setattr(gpus.subprocess, "run",
                        lambda command, **kwargs: subprocess.CompletedProcess(command, 0, output or "", ""))


def test_gpus_are_read_from_nvidia_smi_and_cuda_visible_devices(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_nvidia_smi(monkeypatch, H100)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert [(g.index, g.name, round(g.memory_gib, 1)) for g in visible_gpus()] == [
        (0, "NVIDIA H100 80GB HBM3", 79.6), (1, "NVIDIA H100 80GB HBM3", 79.6)]
    for visible, expected in (("1", [1]), ("GPU-aaaa", [0]), ("", []), ("-1", [])):
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
        assert [g.index for g in visible_gpus()] == expected
    fake_nvidia_smi(monkeypatch, None)
    assert visible_gpus() == []


def test_share_follows_the_backbone_and_the_smallest_gpu() -> None:
    big, edge = Gpu(0, "a", "H100", 79.6), Gpu(0, "b", "Orin", 7.4)
    assert client_gpu_share("stable-diffusion", [big]) == 0.25  # four 8-GiB fits, the cap
    assert client_gpu_share("stable-diffusion", [Gpu(0, "c", "L4", 22.0)]) == 0.5
    assert client_gpu_share("stable-diffusion", [edge]) == 1.0  # one fit per card, even below 8 GiB
    assert client_gpu_share("tiny", [edge]) == 0.25
    assert client_gpu_share("stable-diffusion", [big, edge]) == 1.0
    assert client_gpu_share("tiny", []) == 0.0


def test_launcher_gives_clients_a_gpu_share_without_flags(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(launch, "visible_gpus", lambda: [Gpu(0, "GPU-cccc", "NVIDIA Jetson Orin", 7.4)])
    commands: list[list[str]] = []

    def fake_flwr(command: list[str], **kwargs: object) -> subprocess.CompletedProcess:
        commands.append(command)
        raise launch.RunFailedError("stop after the command was built")

    monkeypatch.setattr(launch, "count_clients", lambda config: 4)
    monkeypatch.setattr(launch.subprocess, "run", fake_flwr)
    config = {"lora.backbone": "stable-diffusion", "output-dir": str(tmp_path)}
    with pytest.raises(launch.RunFailedError):
        launch.run_app(config, tmp_path)
    assert "client-resources-num-gpus=1.0" in commands[0][-1]
    assert "1 GPU (NVIDIA Jetson Orin, 7.4 GiB): 1 GPU per client for the stable-diffusion backbone" in capsys.readouterr().out
    with pytest.raises(launch.RunFailedError):
        launch.run_app(config, tmp_path, gpus_per_client=0.5)
    assert "client-resources-num-gpus=0.5" in commands[1][-1]
    monkeypatch.setattr(launch, "visible_gpus", lambda: [])
    assert launch.gpus_per_client_for(Settings.from_run_config({})) == 0.0
    assert "no GPU visible" in capsys.readouterr().out
