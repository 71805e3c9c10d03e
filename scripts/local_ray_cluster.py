"""A Ray cluster of several nodes on this one machine, to try and test the launcher's --ray-address path.

    python scripts/local_ray_cluster.py [--nodes 2] [--cpus-per-node 1] [--hide-app]

starts a head node and `--nodes - 1` worker nodes (`ray start --block`, each with its own ports), prints
the address to give `python -m warmfed_flwr.launch --ray-address` (or to export as RAY_ADDRESS) and
keeps the cluster up until Ctrl-C, then stops exactly the processes it started (never `ray stop`,
which ends every Ray process on the machine, other runs' too).

With --hide-app (root only), every worker node runs in a mount namespace of its own in which the
project folder is an empty folder (its virtual environment stays visible at the same path), as on a
second machine that has the same Python environment but not this app: the launcher must then ship
the app's code to that node itself. The test of the cluster path (tests/test_ray_cluster.py) uses
the same class, and kills a worker node mid-run as a failing cluster machine would die.
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


class ClusterStartError(RuntimeError):
    """A node did not join the cluster in time."""


@dataclass
class LocalRayCluster:
    """Ray nodes on this machine: one head and worker nodes, each a `ray start --block` process group of its own.

    `temp_dir` is short on purpose: Ray puts its sockets under it, and socket paths are limited to 107 bytes.
    """

    cpus_per_node: int = 1
    temp_dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="ray-", dir="/tmp")))
    port: int = field(default_factory=free_port)
    nodes: dict[str, subprocess.Popen] = field(default_factory=dict)

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    def _start(self, name: str, arguments: list[str], wrapper: list[str] | None = None,
               env: dict[str, str] | None = None, num_cpus: int | None = None) -> None:
        cpus = self.cpus_per_node if num_cpus is None else num_cpus
        command = [sys.executable, "-m", "ray.scripts.scripts", "start", "--block", "--disable-usage-stats",
                   f"--num-cpus={cpus}", f"--temp-dir={self.temp_dir}",
                   f"--dashboard-agent-listen-port={free_port()}", *arguments]
        log = (self.temp_dir / f"{name}.log").open("w")
        environment = {k: v for k, v in (env or os.environ).items() if k != "RAY_ADDRESS"}
        self.nodes[name] = subprocess.Popen([*(wrapper or []), *command], stdout=log, stderr=subprocess.STDOUT,
                                            env=environment, start_new_session=True)

    def start_head(self, num_cpus: int | None = None) -> None:
        """The head node (GCS on `port`), without dashboard, its client server on a free port; `num_cpus` 0 keeps
        clients off it, as on a cluster whose head only coordinates."""
        self._start("head", ["--head", f"--port={self.port}", "--include-dashboard=false",
                             f"--dashboard-port={free_port()}", f"--ray-client-server-port={free_port()}"],
                    num_cpus=num_cpus)

    def add_node(self, name: str, hide: list[Path] | None = None, num_gpus: int = 0,
                 path_prefix: Path | None = None) -> None:
        """A worker node joining the head. `hide`: folders it must not see (an empty tmpfs over each, in a mount
        namespace of its own; needs root); a virtual environment inside one of them stays visible. `num_gpus`: GPUs
        it declares; `path_prefix`: a folder put first on its PATH (e.g. a stand-in nvidia-smi)."""
        env = dict(os.environ)
        if path_prefix is not None:
            env["PATH"] = f"{path_prefix}{os.pathsep}{env['PATH']}"
        wrapper = None
        if hide:
            wrapper = ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c",
                       hiding_script(hide, Path(sys.prefix), self.temp_dir) + ' && exec "$@"', "hide"]
        self._start(name, [f"--address={self.address}", f"--num-gpus={num_gpus}"], wrapper, env)

    def wait_for_nodes(self, count: int, timeout: float = 120.0) -> None:
        """Wait until `count` nodes are alive, as the launcher reads the cluster; ClusterStartError if a node exits."""
        from warmfed_flwr.runtime.ray_cluster import ClusterError, describe_cluster

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, process in self.nodes.items():
                if process.poll() is not None:
                    raise ClusterStartError(f"Ray node {name} exited: {self.log(name)[-2000:]}")
            try:
                if len(describe_cluster(self.address)) >= count:
                    return
            except ClusterError:
                pass
            time.sleep(1.0)
        raise ClusterStartError(f"fewer than {count} Ray nodes joined {self.address} within {timeout:g} s")

    def log(self, name: str) -> str:
        return (self.temp_dir / f"{name}.log").read_text(errors="replace")

    def processes(self, name: str) -> list[psutil.Process]:
        """Every live process of node `name` (its `ray start`, raylet, agents and workers share a process group)."""
        group = self.nodes[name].pid
        found = []
        for process in psutil.process_iter(["pid"]):
            try:
                if os.getpgid(process.pid) == group:
                    found.append(process)
            except (ProcessLookupError, psutil.NoSuchProcess):
                continue
        return found

    def client_workers(self, name: str) -> list[int]:
        """The pids of the ClientApp workers (Flower's `ClientAppActor`s) running on node `name`."""
        pids = []
        for process in self.processes(name):
            try:
                if process.cmdline()[:1] and process.cmdline()[0].startswith("ray::ClientAppActor"):
                    pids.append(process.pid)
            except psutil.NoSuchProcess:
                continue
        return pids

    def kill(self, name: str) -> None:
        """SIGKILL every process of node `name` at once, as if its machine died."""
        try:
            os.killpg(self.nodes[name].pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.nodes[name].wait()

    def stop(self, grace_seconds: float = 10.0) -> None:
        """Stop every node this cluster started (SIGTERM, then SIGKILL after `grace_seconds`)."""
        for name in reversed(list(self.nodes)):
            process = self.nodes[name]
            victims = self.processes(name)
            try:
                os.killpg(process.pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
            _, alive = psutil.wait_procs(victims, timeout=grace_seconds)
            for victim in alive:
                victim.kill()
            process.wait()


class LaunchedRun:
    """`python -m warmfed_flwr.launch` on the cluster at `address`, as a user runs it (with `arguments`), its output
    read line by line as it comes."""

    def __init__(self, address: str, flwr_home: Path, arguments: list[str]) -> None:
        env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"} | {"FLWR_HOME": str(flwr_home)}
        self.flwr_home = flwr_home
        self.lines: list[str] = []
        self.started = time.monotonic()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "warmfed_flwr.launch", "--ray-address", address, *arguments],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        self.reader = threading.Thread(target=lambda: self.lines.extend(self.process.stdout or []), daemon=True)
        self.reader.start()

    def output(self) -> str:
        return "".join(self.lines)

    def wait_for_line(self, *parts: str, timeout: float = 120.0) -> str:
        """The first output line holding every one of `parts`; TimeoutError if none came while the launcher ran."""
        deadline = time.monotonic() + timeout
        while True:
            for line in list(self.lines):
                if all(part in line for part in parts):
                    return line
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise TimeoutError(f"no line with {parts} in the launcher's output:\n{self.output()[-4000:]}")
            time.sleep(0.1)

    def finish(self, timeout: float = 600.0) -> int:
        """Wait for the launcher (killed after `timeout`) and stop what its run left; its exit code."""
        try:
            return self.process.wait(timeout=timeout)
        finally:
            if self.process.poll() is None:
                self.process.kill()
            self.reader.join(timeout=10)
            stop_runs(self.flwr_home)


def stop_runs(flwr_home: Path) -> None:
    """Stop what a run under `flwr_home` left behind (its SuperLink and the processes it started)."""
    for process in psutil.process_iter(["pid"]):
        try:
            if process.environ().get("FLWR_HOME") == str(flwr_home):
                process.terminate()
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue


def hiding_script(hide: list[Path], venv: Path, work_dir: Path) -> str:
    """Shell commands that cover each folder of `hide` with an empty tmpfs, keeping `venv` visible at its path
    (through a bind mount on a folder made in `work_dir`)."""
    commands = []
    keep = next((folder for folder in hide if venv.is_relative_to(folder)), None)
    if keep is not None:  # the environment lives inside a hidden folder: mount it back after covering
        view = Path(tempfile.mkdtemp(prefix="venv-view-", dir=work_dir))
        commands.append(f"mount --bind {shlex.quote(str(venv))} {shlex.quote(str(view))}")
    for folder in hide:
        commands.append(f"mount -t tmpfs -o size=1m none {shlex.quote(str(folder))}")
    if keep is not None:
        venv_path, view_path = shlex.quote(str(venv)), shlex.quote(str(view))
        commands += [f"mkdir -p {venv_path}", f"mount --bind {view_path} {venv_path}"]
    return " && ".join(commands)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, default=2, help="nodes in all, the head included (default 2)")
    parser.add_argument("--cpus-per-node", type=int, default=1)
    parser.add_argument("--head-cpus", type=int, help="CPUs of the head node (default: --cpus-per-node; 0: no clients)")
    parser.add_argument("--hide-app", action="store_true", help="worker nodes do not see the project folder (root)")
    args = parser.parse_args()
    if args.hide_app and os.geteuid() != 0:
        sys.exit("--hide-app needs root: it mounts an empty folder over the project in each worker node's namespace")
    cluster = LocalRayCluster(cpus_per_node=args.cpus_per_node)
    for stop_signal in (signal.SIGINT, signal.SIGTERM):  # also when started in the background (SIGINT ignored there)
        signal.signal(stop_signal, signal.default_int_handler)
    try:
        cluster.start_head(args.head_cpus)
        for index in range(1, args.nodes):
            cluster.add_node(f"node-{index}", hide=[ROOT] if args.hide_app else None)
        cluster.wait_for_nodes(args.nodes)
        print(f"Ray cluster of {args.nodes} nodes at {cluster.address} (logs in {cluster.temp_dir}); run\n"
              f"  python -m warmfed_flwr.launch --ray-address {cluster.address} --preset conf/smoke.toml\n"
              "Ctrl-C (or SIGTERM) stops it.", flush=True)
        signal.pause()
    except KeyboardInterrupt:
        pass
    finally:
        cluster.stop()


if __name__ == "__main__":
    main()
