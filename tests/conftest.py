"""Shared fixtures: Flower's environment for tests, an in-process simulation runner, an image-folder tree."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, Callable

import psutil
import pytest
from flwr.clientapp import ClientApp
from flwr.simulation import run_simulation
from PIL import Image

from warmfed_flwr.client import app as default_client_app
from warmfed_flwr.data.digits_domains import load_digits_domains
from warmfed_flwr.local_superlink import OwnSuperLink
from warmfed_flwr.presets import load_preset
from warmfed_flwr.server import make_server_app

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True, scope="session")
def flower_environment(tmp_path_factory: pytest.TempPathFactory) -> None:
    """A temporary FLWR_HOME, no telemetry, no update check, no runtime dependency installation."""
    patch = pytest.MonkeyPatch()
    patch.setenv("FLWR_HOME", str(tmp_path_factory.mktemp("flwr-home")))
    patch.setenv("FLWR_TELEMETRY_ENABLED", "0")
    patch.setenv("FLWR_DISABLE_UPDATE_CHECK", "1")
    patch.setenv("FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION", "1")
    yield
    patch.undo()


@pytest.fixture
def run_in_process(tmp_path: Path) -> Callable[..., dict[str, Any]]:
    """Run the real ServerApp and a ClientApp in-process (Ray simulation); return results.json."""

    def run(overrides: dict[str, Any], num_supernodes: int, client_app: ClientApp = default_client_app) -> dict[str, Any]:
        config = load_preset(ROOT / "conf" / "smoke.toml") | {"output-dir": str(tmp_path / "run")} | overrides
        run_simulation(
            make_server_app(config),
            client_app,
            num_supernodes=num_supernodes,
            backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0}},
        )
        return json.loads((Path(config["output-dir"]) / "results.json").read_text())

    return run


@pytest.fixture(scope="session")
def three_domain_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """root/<domain>/<digit>/*.png for three styled digit domains, 8 images per class each."""
    root = tmp_path_factory.mktemp("three-domains")
    digits = load_digits_domains(16, seed=0)
    for domain in digits.domains[:3]:
        counts: dict[int, int] = {}
        for image, label in zip(domain.train.images, domain.train.labels.tolist()):
            if counts.get(label, 0) == 8:
                continue
            counts[label] = counts.get(label, 0) + 1
            folder = root / domain.name / str(label)
            folder.mkdir(parents=True, exist_ok=True)
            pixels = (image.permute(1, 2, 0).numpy() * 255).round().astype("uint8")
            Image.fromarray(pixels).save(folder / f"{counts[label]}.png")
    return root


@pytest.fixture
def two_domain_folder(three_domain_folder: Path, tmp_path: Path) -> Path:
    """Two of the three digit domains: data.name="imagefolder" splits it into exactly 2 clients."""
    root = tmp_path / "two-domains"
    root.mkdir()
    for name in sorted(p.name for p in three_domain_folder.iterdir())[:2]:
        (root / name).symlink_to(three_domain_folder / name)
    return root


@pytest.fixture
def flwr_cli_env(tmp_path: Path) -> dict[str, str]:
    """Environment for `flwr run` subprocesses with their own FLWR_HOME and local SuperLink ports (never a SuperLink
    something else left running); stops the SuperLink they leave behind."""
    flwr_home = tmp_path / "flwr-home"
    env = {**os.environ, **OwnSuperLink().env(), "FLWR_HOME": str(flwr_home),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    yield env
    for proc in psutil.process_iter(["pid"]):
        try:
            if proc.environ().get("FLWR_HOME") == str(flwr_home):
                proc.terminate()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
