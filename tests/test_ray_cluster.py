"""The launcher on an existing Ray cluster: two nodes on this machine (scripts/local_ray_cluster.py), the second in
a mount namespace where the project folder and the run's FLWR_HOME are empty, as on a machine with the same Python
environment but without this app. The app reaches that node only as the launcher ships it; one run shows clients
on both nodes, a second loses that node mid-`lora` and completes on the head."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import psutil
import pytest
from local_ray_cluster import LocalRayCluster

ROOT = Path(__file__).resolve().parents[1]
FAKE_GPU = "0, GPU-test-0000, NVIDIA Test GPU, 24576"  # what the stand-in nvidia-smi on the second node prints

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0, reason="hiding the app from the second Ray node takes a mount namespace, which needs root"
)


class Cluster:
    """The running two-node cluster, the FLWR_HOME its runs use (hidden on the second node), and its node ids."""

    def __init__(self, nodes: LocalRayCluster, flwr_home: Path) -> None:
        self.nodes = nodes
        self.flwr_home = flwr_home
        from warmfed_flwr.runtime.ray_cluster import describe_cluster

        described = describe_cluster(nodes.address)
        self.worker_id = next(node.node_id for node in described if node.gpu_count > 0)
        self.head_id = next(node.node_id for node in described if node.gpu_count == 0)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    fake_bin = tmp_path_factory.mktemp("fake-nvidia-smi")
    (fake_bin / "nvidia-smi").write_text(f"#!/bin/sh\necho '{FAKE_GPU}'\n")
    (fake_bin / "nvidia-smi").chmod(0o755)
    flwr_home = tmp_path_factory.mktemp("flwr-home-cluster")
    nodes = LocalRayCluster(cpus_per_node=1)
    try:
        nodes.start_head()
        nodes.add_node("worker", hide=[ROOT, flwr_home], num_gpus=1, path_prefix=fake_bin)
        nodes.wait_for_nodes(2)
        yield Cluster(nodes, flwr_home)
    finally:
        stop_runs(flwr_home)
        nodes.stop()
        shutil.rmtree(nodes.temp_dir, ignore_errors=True)


def stop_runs(flwr_home: Path) -> None:
    """Stop what a run under `flwr_home` left behind (its SuperLink and the processes it started)."""
    for proc in psutil.process_iter(["pid"]):
        try:
            if proc.environ().get("FLWR_HOME") == str(flwr_home):
                proc.terminate()
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue


class LaunchedRun:
    """The launcher run as a user runs it, its output read line by line as it comes."""

    def __init__(self, cluster: Cluster, out_dir: Path, run_config: str) -> None:
        env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"} | {"FLWR_HOME": str(cluster.flwr_home)}
        self.out_dir = out_dir
        self.lines: list[str] = []
        self.process = subprocess.Popen(
            [sys.executable, "-m", "warmfed_flwr.launch", "--preset", "conf/smoke.toml", "--output-dir", str(out_dir),
             "--ray-address", cluster.nodes.address, "--gpus-per-client", "0", "--run-config", run_config],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        self.reader = threading.Thread(target=lambda: self.lines.extend(self.process.stdout), daemon=True)
        self.reader.start()

    def wait_for_line(self, *parts: str, timeout: float = 120.0) -> str:
        """The first output line holding every one of `parts`, waiting for it while the launcher runs."""
        deadline = time.monotonic() + timeout
        while True:
            for line in list(self.lines):
                if all(part in line for part in parts):
                    return line
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"no line with {parts} in the launcher's output:\n{''.join(self.lines)[-4000:]}")
            time.sleep(0.1)

    def finish(self, timeout: float = 300.0) -> dict[str, Any]:
        """Wait for the launcher; results.json once it exited 0."""
        try:
            returncode = self.process.wait(timeout=timeout)
        finally:
            if self.process.poll() is None:
                self.process.kill()
            self.reader.join(timeout=10)
        assert returncode == 0, "".join(self.lines)[-4000:]
        return json.loads((self.out_dir / "results.json").read_text())


def lora_nodes(results: dict[str, Any]) -> dict[int, set[str]]:
    """The Ray nodes each client's `lora` reply came from, by partition id."""
    return {c["partition_id"]: {place["node_id"] for place in c["details"]["ran_on"]["lora"]}
            for c in results["clients"]}


def worker_node_actors(cluster: Cluster) -> list[int]:
    """The pids of the ClientApp workers running on the second node."""
    pids = []
    for proc in cluster.nodes.processes("worker"):
        try:
            if proc.cmdline()[:1] and proc.cmdline()[0].startswith("ray::ClientAppActor"):
                pids.append(proc.pid)
        except psutil.NoSuchProcess:
            continue
    return pids


def test_the_app_runs_on_both_nodes_although_the_second_one_lacks_it(cluster: Cluster, tmp_path: Path) -> None:
    worker_pid = cluster.nodes.nodes["worker"].pid
    probe = subprocess.run(["nsenter", "--target", str(worker_pid), "--mount", "--", sys.executable, "-c",
                            "import warmfed_flwr"], capture_output=True, text=True)
    assert probe.returncode != 0 and "No module named 'warmfed_flwr'" in probe.stderr  # the node cannot import it

    run = LaunchedRun(cluster, tmp_path / "run", "timeout=120.0")
    results = run.finish()
    sizing = next(line for line in run.lines if line.startswith("[launch] Ray cluster at"))
    assert "2 nodes:" in sizing and "1 CPU, no GPU" in sizing and "1 GPU (NVIDIA Test GPU, 24.0 GiB)" in sizing
    assert sizing.rstrip().endswith("each client gets 1 CPU, no GPU: 2 clients at once")
    assert results["failures"] == [] and results["retries"] == []
    assert {node["node_id"] for node in results["nodes"]} == {cluster.head_id, cluster.worker_id}
    assert set().union(*lora_nodes(results).values()) == {cluster.head_id, cluster.worker_id}
    assert all(c["personal_acc"] is not None for c in results["clients"])


def test_a_node_lost_during_lora_costs_no_client(cluster: Cluster, tmp_path: Path) -> None:
    run = LaunchedRun(cluster, tmp_path / "run", "timeout=120.0 lora.steps=20")
    run.wait_for_line("[lora] sending train.lora")
    deadline = time.monotonic() + 60
    while not (actors := worker_node_actors(cluster)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert actors, "no ClientApp worker started on the second node"
    run.wait_for_line(f"pid={actors[0]})", "[lora] partition", "/20,")  # a fit is running there
    cluster.nodes.kill("worker")
    results = run.finish()

    retried = {r["partition_id"] for r in results["retries"]}
    assert retried and all(r["phase"] == "lora" and r["reason"].startswith("worker failed") for r in results["retries"])
    assert results["failures"] == []
    assert all(lora_nodes(results)[pid] == {cluster.head_id} for pid in retried)  # the retry ran on the head
    assert all(c["details"]["adapter_bytes"] > 0 and c["personal_acc"] is not None for c in results["clients"])
