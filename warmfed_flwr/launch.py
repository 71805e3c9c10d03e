"""Run the app with `flwr run` (Ray simulation), sized to the data, and check that it really finished.

    python -m warmfed_flwr.launch [--preset conf/X.toml] [--run-config 'key=value ...'] [--output-dir DIR]
        [--ray-address HOST:PORT]

Run it from the project folder (the one holding pyproject.toml), or pass --app-dir.
The number of simulated SuperNodes is set to the number of clients the data is split into, and on
a machine with GPUs each client gets a GPU share computed from the GPUs and the backbone
(warmfed_flwr/runtime/gpus.py; --gpus-per-client overrides it). With --ray-address (or an exported
RAY_ADDRESS) the simulation runs on that existing Ray cluster, its clients sized from the cluster's
nodes, and the app's code shipped to every node (warmfed_flwr/runtime/ray_cluster.py). Every run
gets a local SuperLink of its own on free ports, never one that another run or checkout left
running, and stops it at the end (--keep-superlink leaves it). The output directory is resolved to
an absolute path before the run starts. `flwr run --stream` exits 0 even when the ServerApp fails, so success is judged by
results.json and `flwr list`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path

from flwr.common.config import parse_config_args

from warmfed_flwr.config import Settings, merge_run_config
from warmfed_flwr.presets import load_preset
from warmfed_flwr.runtime import ray_cluster
from warmfed_flwr.runtime.gpus import client_gpu_share, describe, visible_gpus
from warmfed_flwr.runtime.local_superlink import OwnSuperLink

FLOWER_ENV = {
    "FLWR_TELEMETRY_ENABLED": "0",
    "FLWR_DISABLE_UPDATE_CHECK": "1",
    "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
    "RAY_DEDUP_LOGS": "0",  # clients' progress lines differ only in numbers: Ray would fold them into one
}


class RunFailedError(RuntimeError):
    """The run could not start (its data set cannot be read) or `flwr run` returned without it completing."""


def toml_value(value: object) -> str:
    """A run-config scalar written as a TOML value."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    return repr(value)


def requested_config(preset: str | None, overrides: str | None, output_dir: str | None) -> dict[str, object]:
    """Preset keys, then command-line overrides, then the absolute output directory (default: the resumed one)."""
    config: dict[str, object] = load_preset(preset) if preset else {}
    config.update(parse_config_args([overrides]) if overrides else {})
    if config.get("resume"):
        config["resume"] = str(Path(str(config["resume"])).expanduser().resolve())
    out = output_dir or str(config.get("output-dir") or config.get("resume") or "")
    if not out:
        out = str(Path.cwd() / "outputs" / datetime.now().strftime("%Y-%m-%d-%H%M%S"))
    config["output-dir"] = str(Path(out).expanduser().resolve())
    merge_run_config(config)  # fail here, before Flower starts, on an unknown or mistyped key
    return config


def last_run_status(env: dict[str, str], app_dir: Path) -> str:
    """Status of the newest run known to the local SuperLink, e.g. 'finished:completed'."""
    listing = subprocess.run(
        ["flwr", "list", "--format", "json"], capture_output=True, text=True, env=env, cwd=app_dir
    )
    try:
        runs = json.loads(listing.stdout)["runs"]
    except (json.JSONDecodeError, KeyError):
        return f"unknown ({listing.stdout.strip()[-300:]} {listing.stderr.strip()[-300:]})"
    newest = max(runs, key=lambda r: r.get("pending-at", ""))
    return str(newest.get("status", "unknown"))


def count_clients(config: dict[str, object]) -> int:
    """How many clients the run's data set gives, counted in a short-lived child process.

    Counting needs torch and the data set's index (about 0.7 GB with torch's libraries); this
    process waits for the whole run and would otherwise hold them to the end. A data set that
    cannot be read raises RunFailedError with the child's DataError message.
    """
    child = subprocess.run(
        [sys.executable, "-m", "warmfed_flwr.data", json.dumps(config)], capture_output=True, text=True
    )
    if child.returncode != 0:
        lines = child.stderr.strip().splitlines()
        raise RunFailedError(lines[-1] if lines else f"counting the clients failed with exit code {child.returncode}")
    return int(child.stdout)


def gpus_per_client_for(settings: Settings) -> float:
    """The GPU share of each simulated client on this machine (warmfed_flwr/runtime/gpus.py); the choice is printed."""
    gpus = visible_gpus()
    share = client_gpu_share(settings.lora.backbone, gpus)
    if share:
        print(f"[launch] {describe(gpus)}: {share:g} GPU per client for the {settings.lora.backbone} backbone "
              f"({round(1 / share)} clients per GPU; --gpus-per-client overrides)", flush=True)
    else:
        print("[launch] no GPU visible (nvidia-smi): clients run on the CPU", flush=True)
    return share


def cluster_resources_for(
    settings: Settings, address: str, app_dir: Path, cpus_per_client: int, gpus_per_client: float | None
) -> tuple[float, dict[str, str]]:
    """On the Ray cluster at `address`: each client's GPU share (from the GPUs of the cluster's nodes unless given)
    and what the run's SuperLink needs in its environment. The cluster and the clients' share are printed."""
    nodes = ray_cluster.describe_cluster(address)
    if gpus_per_client is None:
        gpus_per_client = client_gpu_share(settings.lora.backbone, ray_cluster.cluster_gpus(nodes))
    slots = ray_cluster.client_slots(nodes, cpus_per_client, gpus_per_client)
    gpu_text = f" and {gpus_per_client:g} GPU" if gpus_per_client else ", no GPU"
    if slots == 0:
        raise ray_cluster.ClusterError(
            f"the Ray cluster at {address} ({ray_cluster.describe_nodes(nodes)}) has no node that fits a client of "
            f"{cpus_per_client} CPU{gpu_text}; lower --cpus-per-client or --gpus-per-client"
        )
    print(f"[launch] Ray cluster at {address}, {ray_cluster.describe_nodes(nodes)}; each client gets "
          f"{cpus_per_client} CPU{gpu_text}: {slots} clients at once", flush=True)
    return gpus_per_client, ray_cluster.simulation_environment(address, app_dir)


def run_app(
    config: dict[str, object],
    app_dir: Path,
    cpus_per_client: int = 1,
    gpus_per_client: float | None = None,
    keep_superlink: bool = False,
    ray_address: str | None = None,
) -> Path:
    """Run the app under `flwr run`; return the run directory, or exit non-zero if the run failed.

    `gpus_per_client` None: a share computed from this machine's GPUs and the backbone, or with
    `ray_address`, from the GPUs of that Ray cluster's nodes, on which the simulation then runs. The run
    gets a local SuperLink of its own (warmfed_flwr/runtime/local_superlink.py), stopped at the end unless
    `keep_superlink`.
    """
    settings = Settings.from_run_config(config)
    cluster_env: dict[str, str] = {}
    address = ray_cluster.cluster_address(ray_address)
    if address:
        gpus_per_client, cluster_env = cluster_resources_for(
            settings, address, app_dir, cpus_per_client, gpus_per_client
        )
    elif gpus_per_client is None:
        gpus_per_client = gpus_per_client_for(settings)
    out_dir = Path(settings.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    config_file = out_dir / "requested_run_config.toml"
    config_file.write_text("".join(f"{k} = {toml_value(v)}\n" for k, v in sorted(config.items())))
    num_clients = count_clients(config)
    superlink = OwnSuperLink()
    # the SuperLink is started from PATH: this interpreter's own `flwr` first
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    env = {**os.environ, **FLOWER_ENV, **superlink.env(), **cluster_env, "PATH": path}
    if not address:  # --ray-address local beats an exported RAY_ADDRESS
        env = ray_cluster.without_cluster(env)
    env.setdefault("FLWR_HOME", str(app_dir / ".flwr"))
    federation = (
        f"num-supernodes={num_clients} client-resources-num-cpus={cpus_per_client} "
        f"client-resources-num-gpus={gpus_per_client}"
    )
    command = [
        "flwr", "run", str(app_dir), "--stream", "--run-config", str(config_file), "--federation-config", federation,
    ]
    print(f"$ {' '.join(command)}  (local SuperLink of its own on port {superlink.http_port})", flush=True)
    try:
        subprocess.run(command, env=env, cwd=app_dir, check=True)
        status = last_run_status(env, app_dir)
    finally:
        if keep_superlink:
            print(f"[launch] kept the SuperLink on port {superlink.http_port}: "
                  f"{' '.join(f'{k}={v}' for k, v in superlink.env().items())} flwr list", flush=True)
        else:
            superlink.stop()
    results = out_dir / "results.json"
    if status != "finished:completed" or not results.exists():
        error = json.loads(results.read_text()).get("error") if results.exists() else None
        raise RunFailedError(
            f"run did not complete: status {status}, results.json {'present' if results.exists() else 'missing'} "
            f"in {out_dir}" + (f"; the ServerApp stopped with {error}" if error else "")
        )
    print(f"results: {results} (the summary above: {out_dir / 'summary.md'})")
    return out_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", help="a TOML file under conf/")
    parser.add_argument("--run-config", help="overrides, e.g. 'method=\"fedavg\" rounds=5'")
    parser.add_argument("--output-dir", help="run directory (default outputs/<date>-<time>)")
    parser.add_argument("--app-dir", default=".", help="the project folder holding pyproject.toml (default: .)")
    parser.add_argument("--cpus-per-client", type=int, default=1, help="Ray CPUs per simulated client (integer)")
    parser.add_argument("--keep-superlink", action="store_true",
                        help="leave the run's local SuperLink running afterwards (default: stopped)")
    parser.add_argument(
        "--gpus-per-client", type=float,
        help="GPU share per client, e.g. 0.25 for 4 clients per GPU (default: from the visible GPUs and the backbone)",
    )
    parser.add_argument(
        "--ray-address", default=os.environ.get(ray_cluster.ADDRESS_VARIABLE) or None,
        help="run the simulation on the existing Ray cluster at HOST:PORT (default: $RAY_ADDRESS; unset or "
             "'local': a Ray instance of the run's own on this machine)",
    )
    args = parser.parse_args()
    try:
        run_app(
            requested_config(args.preset, args.run_config, args.output_dir),
            Path(args.app_dir).resolve(),
            args.cpus_per_client,
            args.gpus_per_client,
            args.keep_superlink,
            args.ray_address,
        )
    except (RunFailedError, ray_cluster.ClusterError) as err:
        sys.exit(str(err))


if __name__ == "__main__":
    main()
