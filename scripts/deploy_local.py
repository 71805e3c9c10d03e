"""Deploy the app on this machine the way a real federation runs: TLS, authenticated SuperNodes, `flwr run`.

    python scripts/deploy_local.py --supernodes N --work-dir DIR
        [--preset conf/smoke.toml] [--run-config 'method="fedavg"'] [--output-dir DIR/run] [--timeout 600]
        [--kill-supernode K] [--restart-supernode J] [--threads-per-supernode T]
    python scripts/deploy_local.py --node-folders DIR0 DIR1 DIR2 [--isolate-node-folders] --work-dir DIR ...

In DIR (which must be empty or new) it
1. creates a throw-away CA and a server certificate for 127.0.0.1/localhost (openssl, P-384),
2. creates one ECDSA P-384 key pair per SuperNode (ssh-keygen, the OpenSSH format Flower reads),
3. starts `flower-superlink` with TLS and `--enable-supernode-auth` on a free loopback port,
4. writes the connection `[superlink.local-tls]` (address, root-certificates) into
   DIR/flwr-home/config.toml (FLWR_HOME of every `flwr` command) and registers each SuperNode's
   public key with `flwr supernode register`: only these keys may connect,
5. starts N `flower-supernode`s with the CA as root certificate, their private keys,
   `--node-config "partition-id=K num-partitions=N"` and distinct free ports, and waits until all
   N are online. Like separate machines, the SuperNodes share this machine's cores instead of each
   taking all of them: each (and the ClientApp processes it starts) gets OMP_NUM_THREADS = cores / N,
   at least 1 (--threads-per-supernode sets another number). Without it, N PyTorch processes with a
   thread per core each oversubscribe the cores and every step takes many times longer. With
   --node-folders each SuperNode K gets its own folder as `data-root="DIR_K"` (the run uses
   data.name="node-local": each node reads its folder and nothing else, the server none). With
   --isolate-node-folders (root only) each SuperNode runs in a mount namespace of its own in which
   the other nodes' folders are hidden under empty tmpfs mounts, as on separate machines; the
   script checks, through each node's namespace, that the node sees its own folder and none of
   the others',

6. runs `flwr run <app> local-tls --stream --run-config <config>` and checks that `flwr list` says
   finished:completed and that results.json was written.
   With --kill-supernode K (a fault test) it SIGKILLs SuperNode K and the processes it started as soon
   as the run has finished discovery, as if that machine died; with min-clients=1 the run must still
   complete, and results.json records the SuperNode as unavailable. With --restart-supernode K it
   kills SuperNode K the same way, waits until the SuperLink reports it offline, and starts it
   again with the same key (so the same node id) REBOOT_SECONDS later: the run asks its client again (`retries`).
   Both may be given, for two different SuperNodes, in one run.
Every process it started is stopped by PID when it ends: on success, on failure, on Ctrl-C and on
SIGTERM. Logs: DIR/logs/. The number of SuperNodes must equal the number of clients the data is split
into (4 for the embedded digits; a folder of 2 domains with data.name="imagefolder" gives 2).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import psutil
from flwr.common.config import parse_config_args

from warmfed_flwr.config import NODE_LOCAL, ConfigError, Settings
from warmfed_flwr.launch import FLOWER_ENV, RunFailedError, count_clients, last_run_status, requested_config, toml_value
from warmfed_flwr.runtime.processes import terminate_all

APP_DIR = Path(__file__).resolve().parents[1]
CONNECTION = "local-tls"
HOST = "127.0.0.1"
TOOLS = ("openssl", "ssh-keygen", "flower-superlink", "flower-supernode", "flwr")
NODE_LOCAL_RUN = {"data.name": NODE_LOCAL}
SERVER_CERT_EXTENSIONS = (
    "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
    "basicConstraints=critical,CA:FALSE\n"
    "keyUsage=critical,digitalSignature\n"
    "extendedKeyUsage=serverAuth\n"
)

# A restarted SuperNode comes back this long after the SuperLink reports it offline, as a machine takes a while to
# reboot. Sooner, it could pull the message the run sent its dead predecessor before the ServerApp (whose Grid polls
# for replies every 3 s) has seen the node unavailable: the run would then not see the restart at all.
REBOOT_SECONDS = 6.0


class DeploymentError(RuntimeError):
    """A step of the deployment failed; the message names the step and where its log is."""


@dataclass(frozen=True)
class TlsFiles:
    ca_cert: Path
    server_cert: Path
    server_key: Path


def flower_env(flwr_home: Path) -> dict[str, str]:
    """This environment with Flower's settings, FLWR_HOME, and this interpreter's bin/ first on PATH."""
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    return {**os.environ, **FLOWER_ENV, "FLWR_HOME": str(flwr_home), "PATH": path}


def check_tools(env: dict[str, str]) -> None:
    missing = [tool for tool in TOOLS if shutil.which(tool, path=env["PATH"]) is None]
    if missing:
        raise DeploymentError(f"not found on PATH: {', '.join(missing)} (openssl and ssh-keygen come with the OS)")


def _check_call(command: list[str], what: str) -> None:
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise DeploymentError(f"{what} failed ({' '.join(command)}):\n{done.stderr.strip()}")


def make_tls_files(folder: Path) -> TlsFiles:
    """A throw-away CA (1 day) and a server certificate for 127.0.0.1 and localhost signed by it."""
    folder.mkdir(parents=True, exist_ok=True)
    ca_key, ca_cert = folder / "ca.key", folder / "ca.crt"
    key, csr, cert, extensions = folder / "server.key", folder / "server.csr", folder / "server.crt", folder / "server.ext"
    new_key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-384", "-nodes"]
    _check_call(["openssl", "req", "-x509", *new_key, "-keyout", str(ca_key), "-out", str(ca_cert), "-days", "1",
                 "-subj", "/CN=warmfed-flwr throw-away CA"], "creating the CA")
    _check_call(["openssl", "req", *new_key, "-keyout", str(key), "-out", str(csr), "-subj", "/CN=localhost"],
                "creating the server key")
    extensions.write_text(SERVER_CERT_EXTENSIONS)
    _check_call(["openssl", "x509", "-req", "-in", str(csr), "-CA", str(ca_cert), "-CAkey", str(ca_key),
                 "-CAcreateserial", "-days", "1", "-extfile", str(extensions), "-out", str(cert)],
                "signing the server certificate")
    _check_call(["openssl", "verify", "-CAfile", str(ca_cert), str(cert)], "verifying the server certificate")
    return TlsFiles(ca_cert=ca_cert, server_cert=cert, server_key=key)


def make_node_key(folder: Path, name: str) -> Path:
    """An ECDSA P-384 key pair in OpenSSH format: returns the private key; the public key is beside it (.pub)."""
    folder.mkdir(parents=True, exist_ok=True)
    private = folder / name
    _check_call(["ssh-keygen", "-q", "-t", "ecdsa", "-b", "384", "-N", "", "-C", name, "-f", str(private)],
                f"creating the key pair of {name}")
    return private


def threads_per_supernode(supernodes: int) -> int:
    """This machine's cores shared out among `supernodes` SuperNodes, at least one thread each."""
    return max(1, (os.cpu_count() or 1) // supernodes)


class Deployment:
    """The SuperLink and SuperNodes of one deployment; leaving the `with` block stops each of them by PID.

    `supernode_threads`: OMP_NUM_THREADS of each SuperNode and the ClientApp processes it starts (None: the
    environment's)."""

    def __init__(self, work_dir: Path, tls: TlsFiles, supernode_threads: int | None = None) -> None:
        self.work_dir = work_dir
        self.tls = tls
        self.supernode_threads = supernode_threads
        self.logs = work_dir / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.cli_env = flower_env(work_dir / "flwr-home")
        self.processes: list[tuple[str, subprocess.Popen, IO[str]]] = []
        self.killed: set[str] = set()  # killed on purpose (fault tests): their exit is no failure
        self.ports: set[int] = set()
        self.superlink_port = 0

    def __enter__(self) -> Deployment:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def free_port(self) -> int:
        """A loopback port that is free now and not yet given to another process of this deployment."""
        while True:
            with socket.socket() as sock:
                sock.bind((HOST, 0))
                port = sock.getsockname()[1]
            if port not in self.ports:
                self.ports.add(port)
                return port

    def log_path(self, name: str) -> Path:
        return self.logs / f"{name}.log"

    def _start(self, name: str, command: list[str], threads: int | None = None) -> subprocess.Popen:
        """Start a Flower process with its own FLWR_HOME (like a machine of its own) and, if given, `threads`
        OpenMP threads; output to logs/NAME.log."""
        log = self.log_path(name).open("w")
        env = flower_env(self.work_dir / "homes" / name)
        if threads is not None:
            env |= {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=self.work_dir)
        self.processes.append((name, process, log))
        print(f"started {name} (pid {process.pid}): {' '.join(command)}", flush=True)
        return process

    def _log_tail(self, name: str, lines: int = 25) -> str:
        return "\n".join(self.log_path(name).read_text(errors="replace").splitlines()[-lines:])

    def start_superlink(self, wait_seconds: float = 60.0) -> None:
        """flower-superlink with TLS (all APIs on one port) and SuperNode authentication; wait until it listens."""
        self.superlink_port = self.free_port()
        process = self._start("superlink", [
            "flower-superlink",
            "--ssl-ca-certfile", str(self.tls.ca_cert),
            "--ssl-certfile", str(self.tls.server_cert),
            "--ssl-keyfile", str(self.tls.server_key),
            "--enable-supernode-auth",
            "--disable-runtime-dependency-installation",
            "--host", HOST, "--port", str(self.superlink_port),
        ])
        deadline = time.monotonic() + wait_seconds
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise DeploymentError(f"flower-superlink exited with {process.returncode}:\n{self._log_tail('superlink')}")
            try:
                socket.create_connection((HOST, self.superlink_port), timeout=1).close()
                self.write_connection()
                return
            except OSError:
                time.sleep(0.5)
        raise DeploymentError(f"flower-superlink did not listen on {HOST}:{self.superlink_port} within {wait_seconds:.0f} s")

    def write_connection(self) -> None:
        """$FLWR_HOME/config.toml of the flwr CLI: the TLS connection to this SuperLink, also the default one."""
        config = Path(self.cli_env["FLWR_HOME"]) / "config.toml"
        config.parent.mkdir(parents=True, exist_ok=True)
        config.write_text(
            f"[superlink]\ndefault = {toml_value(CONNECTION)}\n\n"
            f"[superlink.{CONNECTION}]\naddress = {toml_value(f'{HOST}:{self.superlink_port}')}\n"
            f"root-certificates = {toml_value(str(self.tls.ca_cert))}\n"
        )

    def flwr(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess:
        """A `flwr` CLI command against this SuperLink (it must succeed)."""
        command = ["flwr", *args]
        done = subprocess.run(command, capture_output=True, text=True, env=self.cli_env, cwd=APP_DIR, timeout=timeout)
        if done.returncode != 0:
            raise DeploymentError(f"{' '.join(command)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
        return done

    def register(self, private_key: Path) -> int:
        """Register the public key beside `private_key`; returns the node id the SuperLink assigned."""
        done = self.flwr("supernode", "register", f"{private_key}.pub", CONNECTION, "--format", "json")
        return int(json.loads(done.stdout)["node-id"])

    def nodes(self) -> list[dict]:
        """The SuperLink's node list (`flwr supernode list --format json`)."""
        return json.loads(self.flwr("supernode", "list", CONNECTION, "--format", "json").stdout)["nodes"]

    def start_supernode(
        self,
        name: str,
        private_key: Path,
        partition_id: int,
        num_partitions: int,
        data_root: Path | None = None,
        hidden: tuple[Path, ...] = (),
    ) -> subprocess.Popen:
        """flower-supernode over TLS (the CA as root certificate), authenticated by `private_key`, on a free port.

        `data_root`: the node's own image folder (node config `data-root`, named in results by its folder
        name). `hidden`: folders the node must not see; it then runs in its own mount namespace with each
        of them covered by an empty tmpfs (needs root).
        """
        port = self.free_port()
        node_config = f"partition-id={partition_id} num-partitions={num_partitions}"
        if data_root is not None:
            node_config += f" data-root={toml_value(str(data_root))} domain={toml_value(data_root.name)}"
        command = [
            "flower-supernode",
            "--superlink", f"{HOST}:{self.superlink_port}",
            "--root-certificates", str(self.tls.ca_cert),
            "--auth-supernode-private-key", str(private_key),
            "--node-config", node_config,
            "--host", HOST, "--port", str(port),
        ]
        if hidden:
            covers = " && ".join(f"mount -t tmpfs -o size=4k,mode=000 none {shlex.quote(str(f))}" for f in hidden)
            command = ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c",
                       f"{covers} && exec {shlex.join(command)}"]
        return self._start(name, command, self.supernode_threads)

    def visible_entries(self, name: str, folder: Path) -> list[str]:
        """What SuperNode `name` sees in `folder`, listed from inside its mount namespace."""
        _, process, _ = next(entry for entry in self.processes if entry[0] == name)
        listing = subprocess.run(
            ["nsenter", "--target", str(process.pid), "--mount", "--", "ls", "-A", str(folder)],
            capture_output=True, text=True,
        )
        if listing.returncode != 0:
            raise DeploymentError(f"cannot list {folder} as {name} sees it: {listing.stderr.strip()}")
        return listing.stdout.split()

    def kill(self, name: str) -> None:
        """SIGKILL a started process and every process it started, as if its machine died (fault tests)."""
        _, process, _ = next(entry for entry in self.processes if entry[0] == name)
        try:
            victims = [psutil.Process(process.pid), *psutil.Process(process.pid).children(recursive=True)]
        except psutil.NoSuchProcess:
            victims = []
        for victim in victims:
            try:
                victim.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(victims, timeout=10)
        process.wait(timeout=10)
        self.killed.add(name)
        print(f"killed {name} (pid {process.pid}) and the {max(len(victims) - 1, 0)} processes it started", flush=True)

    def wait_online(self, node_ids: list[int], wait_seconds: float = 60.0) -> None:
        """Wait until every node in `node_ids` is online; fail early if a SuperNode process exits."""
        deadline = time.monotonic() + wait_seconds
        while True:
            for name, process, _ in self.processes:
                if process.poll() is not None and name not in self.killed:
                    raise DeploymentError(f"{name} exited with {process.returncode}:\n{self._log_tail(name)}")
            online = {int(node["node-id"]) for node in self.nodes() if node["status"] == "online"}
            if online >= set(node_ids):
                return
            if time.monotonic() > deadline:
                raise DeploymentError(f"SuperNodes {sorted(set(node_ids) - online)} not online after {wait_seconds:.0f} s")
            time.sleep(1.0)

    def wait_offline(self, node_id: int, wait_seconds: float = 180.0) -> None:
        """Wait until the SuperLink no longer lists `node_id` as online (it missed its heartbeats)."""
        deadline = time.monotonic() + wait_seconds
        while any(int(node["node-id"]) == node_id and node["status"] == "online" for node in self.nodes()):
            if time.monotonic() > deadline:
                raise DeploymentError(f"node {node_id} still online {wait_seconds:.0f} s after its SuperNode was killed")
            time.sleep(2.0)
        print(f"the SuperLink reports node {node_id} offline", flush=True)

    def stop(self, grace_seconds: float = 10.0) -> None:
        """Stop every started process by PID, with the helpers each spawned (flower-superexec, ServerApp and
        ClientApp processes): SIGTERM to all at once, SIGKILL to those still alive after the grace time."""
        helpers: list[psutil.Process] = []
        for _, process, _ in self.processes:
            if process.poll() is None:  # not reaped yet, so the PID is still this process's
                try:
                    helpers += psutil.Process(process.pid).children(recursive=True)
                except psutil.NoSuchProcess:
                    pass
                process.terminate()
        deadline = time.monotonic() + grace_seconds
        terminate_all(helpers, grace_seconds)
        for _, process, _ in self.processes:
            try:
                process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        while self.processes:
            name, process, log = self.processes.pop(0)
            log.close()
            print(f"stopped {name} (pid {process.pid}, exit {process.returncode})", flush=True)

def wait_for_phase(results: Path, phase: str, run: subprocess.Popen, deadline: float) -> None:
    """Wait until results.json lists `phase` as finished; fail if `flwr run` ends first or time runs out."""
    while time.monotonic() < deadline and run.poll() is None:
        try:
            if any(p["name"] == phase for p in json.loads(results.read_text())["phases"]):
                return
        except (OSError, ValueError, KeyError):  # not written yet
            pass
        time.sleep(0.2)
    raise DeploymentError(f"the run did not finish phase '{phase}' (flwr run exit code {run.poll()})")


def check_isolation(deployment: Deployment, folders: list[Path]) -> None:
    """Each node sees its own folder's entries and nothing of the others' (listed inside its namespace)."""
    for k, own in enumerate(folders):
        name = f"supernode-{k}"
        if deployment.visible_entries(name, own) != sorted(p.name for p in own.iterdir() if not p.name.startswith(".")):
            raise DeploymentError(f"{name} does not see its own folder {own} whole")
        for other in folders[:k] + folders[k + 1:]:
            seen = deployment.visible_entries(name, other)
            if seen:
                raise DeploymentError(f"{name} can see {other}: {seen[:5]}")
        print(f"{name} sees its own folder {own} and nothing of the {len(folders) - 1} others", flush=True)


def deploy_and_run(
    work_dir: Path,
    supernodes: int,
    config: dict[str, object],
    timeout: float,
    kill_supernode: int | None = None,
    restart_supernode: int | None = None,
    node_folders: list[Path] | None = None,
    isolate: bool = False,
    supernode_threads: int | None = None,
) -> Path:
    """Steps 1-6 of the module docstring; returns results.json. Raises DeploymentError on any failure.
    `supernode_threads` None: the machine's cores shared out among the SuperNodes."""
    settings = Settings.from_run_config(config)
    clients = len(node_folders) if node_folders else count_clients(config)
    if clients != supernodes:
        raise DeploymentError(
            f"the run config splits the data ({settings.data.name}) into {clients} clients but --supernodes is "
            f"{supernodes}; they must be equal (use --supernodes {clients}, or data.name=\"imagefolder\" "
            f"data.root=<a folder with {supernodes} domain folders>)"
        )
    out_dir = Path(settings.output_dir)
    results = out_dir / "results.json"
    if results.exists():
        raise DeploymentError(f"{results} exists already: choose a fresh --output-dir")
    out_dir.mkdir(parents=True, exist_ok=True)
    config_file = out_dir / "requested_run_config.toml"
    config_file.write_text("".join(f"{key} = {toml_value(value)}\n" for key, value in sorted(config.items())))

    tls = make_tls_files(work_dir / "tls")
    keys = [make_node_key(work_dir / "keys", f"supernode-{k}") for k in range(supernodes)]
    threads = supernode_threads or threads_per_supernode(supernodes)
    print(f"each SuperNode gets {threads} thread(s) of this machine's {os.cpu_count()} cores", flush=True)
    with Deployment(work_dir, tls, supernode_threads=threads) as deployment:
        deployment.start_superlink()
        node_ids = [deployment.register(key) for key in keys]
        for partition_id, key in enumerate(keys):
            own = node_folders[partition_id] if node_folders else None
            hidden = tuple(f for f in node_folders if f != own) if node_folders and isolate else ()
            deployment.start_supernode(f"supernode-{partition_id}", key, partition_id, supernodes, own, hidden)
        deployment.wait_online(node_ids)
        if node_folders and isolate:
            check_isolation(deployment, node_folders)
        print(f"SuperLink https://{HOST}:{deployment.superlink_port}, SuperNodes online: {node_ids}", flush=True)
        command = ["flwr", "run", str(APP_DIR), CONNECTION, "--stream", "--run-config", str(config_file)]
        print(f"$ {' '.join(command)}", flush=True)
        deadline = time.monotonic() + timeout
        run = subprocess.Popen(command, env=deployment.cli_env, cwd=APP_DIR)
        try:
            victims = [k for k in (kill_supernode, restart_supernode) if k is not None]
            if victims:
                wait_for_phase(results, "discover", run, deadline)
            for k in victims:
                deployment.kill(f"supernode-{k}")
            if restart_supernode is not None:
                k = restart_supernode
                deployment.wait_offline(node_ids[k])
                time.sleep(REBOOT_SECONDS)
                own = node_folders[k] if node_folders else None
                deployment.start_supernode(f"supernode-{k}-restarted", keys[k], k, supernodes, own)
                deployment.wait_online([node_ids[k]])
                print(f"restarted supernode-{k} as node {node_ids[k]}", flush=True)
            returncode = run.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired as error:
            raise DeploymentError(f"flwr run did not finish within {timeout:.0f} s; logs in {deployment.logs}") from error
        finally:
            if run.poll() is None:
                run.kill()
                run.wait()
        if returncode != 0:
            raise DeploymentError(f"flwr run exited with {returncode}; logs in {deployment.logs}")
        status = last_run_status(deployment.cli_env, APP_DIR)
    if status != "finished:completed" or not results.exists():
        raise DeploymentError(
            f"run did not complete: status {status}, results.json {'present' if results.exists() else 'missing'} "
            f"in {out_dir}; logs in {work_dir / 'logs'}"
        )
    return results


def _exit_on_sigterm(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds through Deployment.__exit__, which stops the processes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--supernodes", type=int, help="number of SuperNodes (= clients of the data)")
    parser.add_argument("--node-folders", type=Path, nargs="+", metavar="DIR",
                        help="one image folder per SuperNode (its data-root; the run uses data.name=\"node-local\")")
    parser.add_argument("--isolate-node-folders", action="store_true",
                        help="hide the other nodes' folders from each SuperNode (a mount namespace each; needs root)")
    parser.add_argument("--work-dir", type=Path, required=True, help="an empty or new folder for keys, logs, outputs")
    parser.add_argument("--preset", default=str(APP_DIR / "conf" / "smoke.toml"), help="run-config preset (TOML)")
    parser.add_argument("--run-config", default='method="fedavg"', help="key=value overrides of the preset")
    parser.add_argument("--output-dir", type=Path, help="run directory (default WORK_DIR/run)")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds for `flwr run`")
    parser.add_argument("--restart-supernode", type=int, metavar="K",
                        help="fault test: kill SuperNode K after discovery, start it again once it is reported offline")
    parser.add_argument("--kill-supernode", type=int, metavar="K",
                        help="fault test: SIGKILL SuperNode K (with its processes) once the run finished discovery")
    parser.add_argument("--threads-per-supernode", type=int, metavar="T",
                        help="OMP_NUM_THREADS of each SuperNode and its ClientApps (default: the cores / SuperNodes)")
    args = parser.parse_args()

    node_folders = [folder.expanduser().resolve() for folder in args.node_folders or []]
    if node_folders:
        missing = [str(folder) for folder in node_folders if not folder.is_dir()]
        if missing:
            parser.error(f"--node-folders: not a folder: {', '.join(missing)}")
        if args.supernodes not in (None, len(node_folders)):
            parser.error(f"--supernodes {args.supernodes} but {len(node_folders)} --node-folders: one SuperNode per folder")
        args.supernodes = len(node_folders)
    if args.isolate_node_folders and not node_folders:
        parser.error("--isolate-node-folders needs --node-folders")
    if args.isolate_node_folders and os.geteuid() != 0:
        parser.error("--isolate-node-folders needs root: each SuperNode gets a mount namespace of its own")
    if args.supernodes is None:
        parser.error("give --supernodes N or --node-folders DIR ...")
    if args.supernodes < 1:
        parser.error("--supernodes must be at least 1")
    if args.threads_per_supernode is not None and args.threads_per_supernode < 1:
        parser.error("--threads-per-supernode must be at least 1")
    if args.kill_supernode is not None and args.kill_supernode == args.restart_supernode:
        parser.error("--kill-supernode and --restart-supernode must name two different SuperNodes")
    for flag, victim in (("--kill-supernode", args.kill_supernode), ("--restart-supernode", args.restart_supernode)):
        if victim is not None and not 0 <= victim < args.supernodes:
            parser.error(f"{flag} must be between 0 and {args.supernodes - 1}")
    work_dir = args.work_dir.expanduser().resolve()
    if work_dir.exists() and any(work_dir.iterdir()):
        parser.error(f"--work-dir {work_dir} is not empty")
    try:
        if "output-dir" in parse_config_args([args.run_config]):
            parser.error("give the output directory with --output-dir, not in --run-config")
        config = requested_config(args.preset, args.run_config, str(args.output_dir or work_dir / "run"))
    except (ValueError, FileNotFoundError) as error:  # a bad preset or override, named by the message
        parser.error(str(error))
    if node_folders:
        if config.get("data.name", NODE_LOCAL) != NODE_LOCAL:
            parser.error(f"--node-folders runs on each node's own folder: data.name must be {NODE_LOCAL!r}")
        config.update(NODE_LOCAL_RUN)

    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    started = time.monotonic()
    try:
        work_dir.mkdir(parents=True, exist_ok=True)
        check_tools(flower_env(work_dir / "flwr-home"))
        results = deploy_and_run(
            work_dir, args.supernodes, config, args.timeout, args.kill_supernode, args.restart_supernode, node_folders,
            args.isolate_node_folders, args.threads_per_supernode
        )
    except (DeploymentError, ConfigError, RunFailedError) as error:
        sys.exit(f"deployment failed: {error}")
    print((results.parent / "summary.md").read_text())
    print(f"results: {results} ({time.monotonic() - started:.0f} s in all)")


if __name__ == "__main__":
    main()
