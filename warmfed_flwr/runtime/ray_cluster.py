"""Simulating on a Ray cluster the user already runs: joining it, shipping the app to its nodes, sizing the clients.

Flower 1.42's Ray backend calls `ray.init` without an address, so Ray joins the cluster named by
RAY_ADDRESS when the simulation process has it in its environment; the launcher puts it into the
environment of the run's own SuperLink, whose simulation process inherits it. Flower ships no code:
the ClientApp travels by reference with every message, and Flower only sets the workers' PYTHONPATH
to the driver's `sys.path`, which exists on the driver's machine alone. So the launcher also names
`ship_app` as Ray's runtime-env hook (RAY_RUNTIME_ENV_HOOK): when Flower calls `ray.init`, the
app's package is added as a `py_modules` entry, uploaded to the cluster once and unpacked on every
node by Ray, and the driver's own copies of the app are taken off the workers' PYTHONPATH, so that
every worker, on every node, runs the same copy. The package shipped is the one in the app folder the
launcher ran (APP_PACKAGE_VARIABLE), not Flower's unpacked bundle, which lacks the shipped tiny base
model's weights (a bundle holds only source and config files).

Before the run, `describe_cluster` asks the cluster (in a child process, so that the launcher does
not stay connected) for its live nodes: their CPUs and GPUs as Ray counts them, and each GPU's name
and memory as `nvidia-smi` lists them on that node.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from warmfed_flwr.runtime import gpus as gpus_module
from warmfed_flwr.runtime.gpus import Gpu

ADDRESS_VARIABLE = "RAY_ADDRESS"
HOOK_VARIABLE = "RAY_RUNTIME_ENV_HOOK"
HOOK = "warmfed_flwr.runtime.ray_cluster.ship_app"
APP_PACKAGE_VARIABLE = "WARMFED_FLWR_PACKAGE"  # the package folder `ship_app` sends (default: the imported one)
# what the shipped package leaves out: compiled files the workers make again
SHIPPED_EXCLUDES = ["__pycache__", "*.pyc"]


class ClusterError(RuntimeError):
    """The Ray cluster cannot be reached, or it cannot host a single client."""


@dataclass(frozen=True)
class RayNode:
    """One live node of the cluster: its id and address, its CPUs and GPUs as Ray counts them, and those GPUs."""

    node_id: str
    address: str
    cpus: float
    gpu_count: float
    gpus: list[Gpu] = field(default_factory=list)

    @property
    def short_id(self) -> str:
        return self.node_id[:8]


def cluster_address(value: str | None) -> str | None:
    """The cluster to run on: None for none (unset, empty, or Ray's "local": a Ray instance of the run's own);
    Ray's "auto" is the cluster `ray start` last started on this machine."""
    return None if value in (None, "", "local") else check_address(value)


def without_cluster(env: dict[str, str]) -> dict[str, str]:
    """`env` for a run on a Ray instance of its own: an exported cluster address becomes "local", and the hook that
    ships the app to a cluster is dropped."""
    env = dict(env)
    if env.get(ADDRESS_VARIABLE, "local") not in ("", "local"):
        env[ADDRESS_VARIABLE] = "local"
    if env.get(HOOK_VARIABLE) == HOOK:
        del env[HOOK_VARIABLE]
    return env


def check_address(address: str) -> str:
    """The cluster's GCS address (`host:port`, as `ray start --head` prints it); a Ray Client address is refused."""
    if address == "auto":
        return address
    if address.startswith("ray://"):
        raise ClusterError(
            f"--ray-address {address}: a Ray Client address (ray://) is not supported; give the cluster's GCS "
            "address host:port (the one `ray start --head` prints, default port 6379) and launch from a node "
            "of the cluster"
        )
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ClusterError(f"--ray-address {address!r}: expected host:port, e.g. 10.0.0.1:6379")
    return address


def holds_the_app(path: str) -> bool:
    """True for a folder that holds this app's code (the project folder, or Flower's unpacked copy of it)."""
    folder = Path(path)
    return (folder / "warmfed_flwr" / "__init__.py").is_file() or (folder / "client_app.py").is_file()


def ship_app(runtime_env: dict[str, Any] | None) -> dict[str, Any]:
    """Ray's runtime-env hook: the app's package as a `py_modules` entry, and no copy of the app on PYTHONPATH.

    Called by `ray.init` in the simulation process (Flower passes the workers' PYTHONPATH there).
    """
    import warmfed_flwr

    package = os.environ.get(APP_PACKAGE_VARIABLE) or str(Path(warmfed_flwr.__file__).parent)
    shipped = dict(runtime_env or {})
    env_vars = dict(shipped.get("env_vars") or {})
    if "PYTHONPATH" in env_vars:
        entries = env_vars["PYTHONPATH"].split(os.pathsep)
        env_vars["PYTHONPATH"] = os.pathsep.join(entry for entry in entries if entry and not holds_the_app(entry))
        shipped["env_vars"] = env_vars
    shipped["py_modules"] = [*shipped.get("py_modules", []), package]
    shipped["excludes"] = [*shipped.get("excludes", []), *SHIPPED_EXCLUDES]
    return shipped


def simulation_environment(address: str, app_dir: Path) -> dict[str, str]:
    """What the run's SuperLink (and so Flower's simulation process) needs in its environment to run on the cluster.

    The app folder goes first on PYTHONPATH so that the simulation process can import the hook even where the
    app is not installed."""
    pythonpath = os.pathsep.join(part for part in (str(app_dir), os.environ.get("PYTHONPATH", "")) if part)
    return {ADDRESS_VARIABLE: address, HOOK_VARIABLE: HOOK, "PYTHONPATH": pythonpath,
            APP_PACKAGE_VARIABLE: str(app_dir / "warmfed_flwr")}


def client_slots(nodes: list[RayNode], cpus_per_client: float, gpus_per_client: float) -> int:
    """How many clients run at once: per node, as many as its CPUs and (when clients take a GPU share) GPUs hold."""
    slots = 0
    for node in nodes:
        fits = int(node.cpus // cpus_per_client) if cpus_per_client > 0 else 0
        if gpus_per_client > 0:
            fits = min(fits, int(node.gpu_count / gpus_per_client + 1e-9))
        slots += fits
    return slots


def cluster_gpus(nodes: list[RayNode]) -> list[Gpu]:
    """Every GPU Ray counts on the cluster's nodes, with the memory nvidia-smi gives it there."""
    return [gpu for node in nodes for gpu in node.gpus]


def describe_nodes(nodes: list[RayNode]) -> str:
    """e.g. '2 nodes: 1a2b3c4d (10.0.0.1) 8 CPUs, 1 GPU (NVIDIA H100 80GB HBM3, 79.6 GiB); 5e6f...'."""
    parts = []
    for node in nodes:
        gpu_text = gpus_module.describe(node.gpus) if node.gpus else "no GPU"
        parts.append(f"{node.short_id} ({node.address}) {node.cpus:g} CPU{'s' if node.cpus != 1 else ''}, {gpu_text}")
    return f"{len(nodes)} node{'s' if len(nodes) != 1 else ''}: " + "; ".join(parts)


def describe_cluster(address: str) -> list[RayNode]:
    """The cluster's live nodes, asked in a child process; ClusterError if it cannot be reached."""
    child = subprocess.run(
        [sys.executable, "-m", "warmfed_flwr.runtime.ray_cluster", address], capture_output=True, text=True
    )
    if child.returncode != 0:
        lines = child.stderr.strip().splitlines()
        raise ClusterError(f"could not read the Ray cluster at {address}: {lines[-1] if lines else child.returncode}")
    return [
        RayNode(n["node_id"], n["address"], n["cpus"], n["gpu_count"], [Gpu(**g) for g in n["gpus"]])
        for n in json.loads(child.stdout)
    ]


def live_nodes(listing: list[dict[str, Any]]) -> list[RayNode]:
    """The live nodes of a `ray.nodes()` listing, with their CPUs and GPUs as Ray counts them (no GPU details)."""
    nodes = []
    for node in listing:
        resources = node.get("Resources") or {}
        if node.get("Alive") and resources:  # a node that died stays listed, not alive and without resources
            nodes.append(RayNode(node["NodeID"], node["NodeManagerAddress"], float(resources.get("CPU", 0)),
                                 float(resources.get("GPU", 0))))
    return nodes


def _read_cluster(address: str) -> list[RayNode]:
    """Join the cluster at `address` and list its live nodes; nvidia-smi runs on each node that has GPUs."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    # the listing runs on nodes that may not have this app: its small module travels by value
    ray.cloudpickle.register_pickle_by_value(gpus_module)
    ray.init(address=address, logging_level="WARNING", log_to_driver=False)
    try:
        nodes = []
        for node in live_nodes(ray.nodes()):
            listed: list[Gpu] = []
            if node.gpu_count > 0:
                where = NodeAffinitySchedulingStrategy(node.node_id, soft=False)
                listing = ray.remote(num_cpus=0, scheduling_strategy=where)(gpus_module.listed_gpus)
                listed = ray.get(listing.remote(), timeout=60)[: int(node.gpu_count)]
                # GPUs Ray counts but nvidia-smi does not list (e.g. declared with --num-gpus): memory unknown
                unlisted = range(len(listed), int(node.gpu_count))
                listed += [Gpu(i, "", "GPU not listed by nvidia-smi", 0.0) for i in unlisted]
            nodes.append(replace(node, gpus=listed))
        return nodes
    finally:
        ray.shutdown()


if __name__ == "__main__":
    print(json.dumps([asdict(node) for node in _read_cluster(sys.argv[1])]))
