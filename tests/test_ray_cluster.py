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
from pathlib import Path
from typing import Any, Iterator

import pytest
from local_ray_cluster import LaunchedRun, LocalRayCluster
from lose_ray_node import lose_node_during_lora

from warmfed_flwr.runtime.ray_cluster import describe_cluster

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
        nodes.stop()
        shutil.rmtree(nodes.temp_dir, ignore_errors=True)


def lora_nodes(results: dict[str, Any]) -> dict[int, set[str]]:
    """The Ray nodes each client's `lora` reply came from, by partition id."""
    return {c["partition_id"]: {place["node_id"] for place in c["details"]["ran_on"]["lora"]}
            for c in results["clients"]}


def launch(cluster: Cluster, out_dir: Path, run_config: str) -> LaunchedRun:
    """The launcher on the cluster with the smoke preset; every client takes one CPU, no GPU."""
    return LaunchedRun(cluster.nodes.address, cluster.flwr_home, [
        "--preset", "conf/smoke.toml", "--output-dir", str(out_dir), "--gpus-per-client", "0", "--run-config", run_config,
    ])


def finished(run: LaunchedRun, out_dir: Path) -> dict[str, Any]:
    """results.json of a run that had to complete."""
    assert run.finish() == 0, run.output()[-4000:]
    return json.loads((out_dir / "results.json").read_text())


def test_the_app_runs_on_both_nodes_although_the_second_one_lacks_it(cluster: Cluster, tmp_path: Path) -> None:
    worker_pid = cluster.nodes.nodes["worker"].pid
    probe = subprocess.run(["nsenter", "--target", str(worker_pid), "--mount", "--", sys.executable, "-c",
                            "import warmfed_flwr"], capture_output=True, text=True)
    assert probe.returncode != 0 and "No module named 'warmfed_flwr'" in probe.stderr  # the node cannot import it

    run = launch(cluster, tmp_path / "run", "timeout=120.0")
    results = finished(run, tmp_path / "run")
    sizing = next(line for line in run.lines if line.startswith("[launch] Ray cluster at"))
    assert "2 nodes:" in sizing and "1 CPU, no GPU" in sizing and "1 GPU (NVIDIA Test GPU, 24.0 GiB)" in sizing
    assert sizing.rstrip().endswith("each client gets 1 CPU, no GPU: 2 clients at once")
    assert results["failures"] == [] and results["retries"] == []
    assert {node["node_id"] for node in results["nodes"]} == {cluster.head_id, cluster.worker_id}
    assert set().union(*lora_nodes(results).values()) == {cluster.head_id, cluster.worker_id}
    assert all(c["personal_acc"] is not None for c in results["clients"])


def test_a_node_lost_during_lora_costs_no_client(cluster: Cluster, tmp_path: Path) -> None:
    run = launch(cluster, tmp_path / "run", "timeout=120.0 lora.steps=20")
    lose_node_during_lora(cluster.nodes, "worker", run)
    results = finished(run, tmp_path / "run")

    retried = {r["partition_id"] for r in results["retries"]}
    assert retried and all(r["phase"] == "lora" and r["reason"].startswith("worker failed") for r in results["retries"])
    assert results["failures"] == []
    assert all(lora_nodes(results)[pid] == {cluster.head_id} for pid in retried)  # the retry ran on the head
    assert all(c["details"]["adapter_bytes"] > 0 and c["personal_acc"] is not None for c in results["clients"])
