"""Shared fixtures: Flower's environment for tests, an in-process simulation runner, an image-folder tree."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, Callable

import psutil
import pytest
import ray
from flwr.app import Context, RecordDict
from flwr.clientapp import ClientApp
from flwr.common.config import get_fused_config_from_dir
from flwr.common.constant import RUN_ID_NUM_BYTES, SUPERLINK_NODE_ID, TASK_ID_NUM_BYTES
from flwr.server.superlink.fleet.vce.backend.raybackend import RayBackend
from flwr.server.superlink.linkstate.utils import generate_rand_int_from_bytes
from flwr.simulation.ray_transport.ray_actor import BasicActorPool
from flwr.simulation.run_simulation import _run_simulation
from flwr.supercore.constant import NOOP_FEDERATION_ID
from flwr.supercore.run import Run
from flwr.supercore.task_identity import TaskIdentity
from flwr.supercore.telemetry import EventType
from PIL import Image

from warmfed_flwr.client.app import app as default_client_app
from warmfed_flwr.data.digits_domains import load_digits_domains
from warmfed_flwr.presets import load_preset
from warmfed_flwr.runtime.local_superlink import OwnSuperLink
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


BACKEND_CONFIG = {"client_resources": {"num_cpus": 1, "num_gpus": 0.0}}


@pytest.fixture(scope="session")
def ray_cluster() -> None:
    """One local Ray cluster for every in-process simulation of the session, started as Flower's RayBackend
    starts it. The backend starts Ray for a run only where none is running, but shuts it down after every
    run; starting and stopping it again costs seconds per simulation on two cores, so `simulate` keeps it."""
    RayBackend(BACKEND_CONFIG)  # ray.init with Flower's arguments (PYTHONPATH for the workers, no dashboard)
    yield
    IDLE_WORKERS.clear()
    ray.shutdown()


# The session's Ray workers (Flower's ClientAppActors) between in-process simulations, by the resources they hold. A
# worker is a process that runs whatever ClientApp each message brings (Flower passes the app with the message), so
# a run can take over the workers the last one left: a fresh worker spends about 6 s of the two cores importing
# torch, Flower and the app, loading the data and the tiny base model, before its first message. Flower's engine
# waits for every message in flight before it ends a run, so the workers a run leaves are idle.
IDLE_WORKERS: dict[tuple, list[Any]] = {}


def resources_key(pool: BasicActorPool) -> tuple:
    return tuple(sorted(pool.client_resources.items()))


def alive(worker: Any) -> bool:
    """Whether a kept worker still answers (one that died while idle was never replaced)."""
    try:
        ray.get(worker.__ray_ready__.remote(), timeout=10)
        return True
    except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
        return False


def take_workers(pool: BasicActorPool, num_actors: int) -> None:
    """BasicActorPool.add_actors_to_pool, taking the session's idle workers before it starts new ones."""
    idle = [worker for worker in IDLE_WORKERS.pop(resources_key(pool), []) if alive(worker)]
    for _ in range(num_actors):
        pool.pool.append(idle.pop() if idle else pool.create_actor_fn())
    pool.num_actors += num_actors
    for surplus in idle:
        ray.kill(surplus)


def keep_workers(pool: BasicActorPool) -> None:
    """BasicActorPool.terminate_all_actors, keeping the run's workers for the next run of the session."""
    IDLE_WORKERS.setdefault(resources_key(pool), []).extend(pool.pool)
    pool.pool = []


def simulate(client_app: ClientApp, num_supernodes: int, overrides: dict[str, Any]) -> None:
    """The real ServerApp and `client_app` in a Ray simulation in this process, with the run config `flwr run`
    would give both: pyproject.toml's `[tool.flwr.app.config]` fused with `overrides` by Flower itself.

    Flower's public `run_simulation` takes no run config (its apps get an empty one), so this calls the
    function behind it with a `Run` that carries the overrides, as the simulation runtime of `flwr run`
    does; the `Run` is made as `run_simulation` makes its own (flwr 1.42).
    """
    run = Run.create_empty(run_id=generate_rand_int_from_bytes(RUN_ID_NUM_BYTES))
    run.override_config = dict(overrides)
    run.primary_task_id = generate_rand_int_from_bytes(TASK_ID_NUM_BYTES)
    run.federation_id = NOOP_FEDERATION_ID
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, run.run_id, SUPERLINK_NODE_ID
    server_context = Context(run_id=run.run_id, node_id=0, node_config={}, state=RecordDict(),
                             run_config=get_fused_config_from_dir(ROOT, run.override_config))
    with pytest.MonkeyPatch.context() as patch:
        if ray.is_initialized():  # the session's cluster (`ray_cluster`) and its workers stay for the next run
            patch.setattr(ray, "shutdown", lambda: None)
            patch.setattr(BasicActorPool, "add_actors_to_pool", take_workers)
            patch.setattr(BasicActorPool, "terminate_all_actors", keep_workers)
        _run_simulation(
            num_supernodes=num_supernodes,
            exit_event=EventType.PYTHON_API_RUN_SIMULATION_LEAVE,
            client_app=client_app,
            server_app=make_server_app(),
            backend_config=BACKEND_CONFIG,
            server_app_context=server_context,
            app_dir=str(ROOT),  # the clients' run config: pyproject.toml here fused with the Run's overrides
            run=run,
            is_app=True,
        )


@pytest.fixture
def run_in_process(tmp_path: Path, ray_cluster: None) -> Callable[..., dict[str, Any]]:
    """Run the real ServerApp and a ClientApp in-process (Ray simulation, Flower's fused run config); return
    results.json."""

    def run(overrides: dict[str, Any], num_supernodes: int, client_app: ClientApp = default_client_app) -> dict[str, Any]:
        config = load_preset(ROOT / "conf" / "smoke.toml") | {"output-dir": str(tmp_path / "run")} | overrides
        simulate(client_app, num_supernodes, config)
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


def link_two_domains(three_domain_folder: Path, root: Path) -> Path:
    """`root` with links to two of the three digit domains: data.name="imagefolder" splits it into 2 clients."""
    root.mkdir()
    for name in sorted(p.name for p in three_domain_folder.iterdir())[:2]:
        (root / name).symlink_to(three_domain_folder / name)
    return root


@pytest.fixture
def two_domain_folder(three_domain_folder: Path, tmp_path: Path) -> Path:
    """Two of the three digit domains: data.name="imagefolder" splits it into exactly 2 clients."""
    return link_two_domains(three_domain_folder, tmp_path / "two-domains")


@pytest.fixture(scope="session")
def warmfed_run_on_two_folders(three_domain_folder: Path, tmp_path_factory: pytest.TempPathFactory,
                               ray_cluster: None) -> Path:
    """The directory of one finished WarmFed one-shot run on two image-folder domains (2 SuperNodes, the smoke
    budgets) with its adapters kept. Tests that only read such a run share it: each run costs about 20 s."""
    work = tmp_path_factory.mktemp("warmfed-run-on-two-folders")
    root = link_two_domains(three_domain_folder, work / "two-domains")
    config = load_preset(ROOT / "conf" / "smoke.toml") | {
        "output-dir": str(work / "run"), "method": "warmfed", "rounds": 0, "data.name": "imagefolder",
        "data.root": str(root), "keep-adapters": True,
    }
    simulate(default_client_app, 2, config)
    return work / "run"


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
