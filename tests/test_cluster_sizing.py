"""The launcher's Ray-cluster path without a cluster: the address it accepts, how it sizes clients from the cluster's
nodes, what it ships to them, and where the run's replies say they ran."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import ray
from flwr.app import Message, Metadata, MetricRecord, RecordDict

from warmfed_flwr import launch
from warmfed_flwr.config import Settings
from warmfed_flwr.run.results import RunRecorder
from warmfed_flwr.runtime import ray_cluster
from warmfed_flwr.runtime.gpus import Gpu
from warmfed_flwr.runtime.placement import PLACEMENT_KEY, report_placement, take_placement
from warmfed_flwr.runtime.ray_cluster import ClusterError, RayNode

ROOT = Path(__file__).resolve().parents[1]
H100 = Gpu(0, "GPU-a", "NVIDIA H100 80GB HBM3", 79.6)


def test_the_address_must_be_host_and_port_of_the_cluster() -> None:
    assert ray_cluster.cluster_address("10.0.0.1:6379") == "10.0.0.1:6379"
    assert ray_cluster.cluster_address("local") is None and ray_cluster.cluster_address("") is None
    assert ray_cluster.cluster_address("auto") == "auto"
    exported = {"RAY_ADDRESS": "10.0.0.1:6379", ray_cluster.HOOK_VARIABLE: ray_cluster.HOOK, "OTHER": "1"}
    assert ray_cluster.without_cluster(exported) == {"RAY_ADDRESS": "local", "OTHER": "1"}
    assert ray_cluster.without_cluster({"OTHER": "1"}) == {"OTHER": "1"}  # nothing exported: nothing changes
    with pytest.raises(ClusterError, match="Ray Client address"):
        ray_cluster.check_address("ray://10.0.0.1:10001")
    with pytest.raises(ClusterError, match="expected host:port"):
        ray_cluster.check_address("10.0.0.1")


def test_live_nodes_leave_out_the_dead_ones() -> None:
    listing = [
        {"NodeID": "a" * 56, "NodeManagerAddress": "10.0.0.1", "Alive": True, "Resources": {"CPU": 8.0, "GPU": 1.0}},
        {"NodeID": "b" * 56, "NodeManagerAddress": "10.0.0.2", "Alive": False, "Resources": {}},
        {"NodeID": "c" * 56, "NodeManagerAddress": "10.0.0.3", "Alive": True, "Resources": {"CPU": 4.0}},
    ]
    nodes = ray_cluster.live_nodes(listing)
    assert [(n.address, n.cpus, n.gpu_count) for n in nodes] == [("10.0.0.1", 8.0, 1.0), ("10.0.0.3", 4.0, 0.0)]


def test_clients_at_once_count_cpus_and_gpus_per_node_as_flower_does() -> None:
    gpu_node = RayNode("a" * 56, "10.0.0.1", 8.0, 2.0, [H100, H100])
    cpu_node = RayNode("b" * 56, "10.0.0.2", 4.0, 0.0)
    assert ray_cluster.client_slots([gpu_node, cpu_node], 1, 0.0) == 12
    assert ray_cluster.client_slots([gpu_node, cpu_node], 1, 0.25) == 8  # CPU-only nodes host no GPU client
    assert ray_cluster.client_slots([gpu_node, cpu_node], 3, 0.25) == 2
    assert ray_cluster.client_slots([cpu_node], 1, 0.5) == 0


def test_the_launcher_sizes_clients_from_the_clusters_gpus_and_names_every_node(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    nodes = [RayNode("a" * 56, "10.0.0.1", 8.0, 1.0, [H100]), RayNode("b" * 56, "10.0.0.2", 2.0, 0.0)]
    monkeypatch.setattr(ray_cluster, "describe_cluster", lambda address: nodes)
    settings = Settings.from_run_config({"lora.backbone": "stable-diffusion"})
    share, env = launch.cluster_resources_for(settings, "10.0.0.1:6379", tmp_path, 2, None)
    assert share == 0.25  # four 8-GiB Stable Diffusion clients on the 80-GiB card, not this machine's nvidia-smi
    line = capsys.readouterr().out
    assert "aaaaaaaa (10.0.0.1) 8 CPUs, 1 GPU (NVIDIA H100 80GB HBM3, 79.6 GiB)" in line
    assert "bbbbbbbb (10.0.0.2) 2 CPUs, no GPU" in line
    assert "each client gets 2 CPU and 0.25 GPU: 4 clients at once" in line
    assert env[ray_cluster.ADDRESS_VARIABLE] == "10.0.0.1:6379" and env[ray_cluster.HOOK_VARIABLE] == ray_cluster.HOOK
    assert env[ray_cluster.APP_PACKAGE_VARIABLE] == str(tmp_path / "warmfed_flwr")
    assert env["PYTHONPATH"].split(os.pathsep)[0] == str(tmp_path)
    with pytest.raises(ClusterError, match="has no node that fits a client of 16 CPU"):
        launch.cluster_resources_for(settings, "10.0.0.1:6379", tmp_path, 16, None)


def test_without_an_address_the_launcher_asks_no_cluster(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    commands: list[list[str]] = []

    def fake_flwr(command: list[str], **kwargs: object) -> subprocess.CompletedProcess:
        commands.append(command)
        assert ray_cluster.HOOK_VARIABLE not in kwargs["env"]  # type: ignore[operator]
        raise launch.RunFailedError("stop after the command was built")

    monkeypatch.setattr(ray_cluster, "describe_cluster", lambda address: pytest.fail("no cluster was given"))
    monkeypatch.setattr(launch, "count_clients", lambda config: 4)
    monkeypatch.setattr(launch, "visible_gpus", lambda: [])
    monkeypatch.setattr(launch.subprocess, "run", fake_flwr)
    monkeypatch.delenv(ray_cluster.HOOK_VARIABLE, raising=False)
    with pytest.raises(launch.RunFailedError):
        launch.run_app({"output-dir": str(tmp_path)}, ROOT)
    assert "client-resources-num-gpus=0.0" in commands[0][-1] and "init-args" not in commands[0][-1]


def test_the_hook_ships_the_app_folders_package_and_takes_the_drivers_copies_off_pythonpath(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    bundle = tmp_path / "flwr-home" / "apps" / "app"  # Flower's unpacked copy of the app
    (bundle / "warmfed_flwr").mkdir(parents=True)
    (bundle / "warmfed_flwr" / "__init__.py").write_text("")
    (bundle / "client_app.py").write_text("")
    monkeypatch.setenv(ray_cluster.APP_PACKAGE_VARIABLE, str(ROOT / "warmfed_flwr"))
    pythonpath = os.pathsep.join([str(bundle), str(ROOT), "/usr/lib/python3.11", str(tmp_path / "site-packages")])
    shipped = ray_cluster.ship_app({"env_vars": {"PYTHONPATH": pythonpath, "OTHER": "1"}})
    assert shipped["py_modules"] == [str(ROOT / "warmfed_flwr")]
    assert shipped["env_vars"] == {"PYTHONPATH": f"/usr/lib/python3.11{os.pathsep}{tmp_path / 'site-packages'}",
                                   "OTHER": "1"}
    assert "__pycache__" in shipped["excludes"]
    assert ray_cluster.ship_app(None)["py_modules"] == [str(ROOT / "warmfed_flwr")]


def test_a_reply_says_where_it_ran_and_the_server_takes_that_out_before_counting(tmp_path: Path) -> None:
    def reply_metadata(message_type: str) -> Metadata:
        return Metadata(run_id=1, message_id="reply-7", src_node_id=7, dst_node_id=1, reply_to_message_id="msg-7",
                        group_id="1", created_at=0.0, ttl=60.0, message_type=message_type)

    query = Message(RecordDict(), metadata=reply_metadata("train.lora"))
    reply = report_placement(query, None, lambda msg, context: Message(
        RecordDict({"metrics": MetricRecord({"num-examples": 1})}), metadata=reply_metadata("train.lora")))
    in_ray = ray.is_initialized()  # the session's Ray, when a simulation ran before in this process
    expected_keys = {"host", "pid"} | ({"node_id", "node_address"} if in_ray else set())
    assert set(reply.content[PLACEMENT_KEY]) == expected_keys  # outside Ray: the host and the process only
    place = take_placement(reply)
    assert place is not None and place["pid"] == os.getpid() and PLACEMENT_KEY not in reply.content
    assert take_placement(reply) is None

    recorder = RunRecorder(tmp_path, "warmfed", 0, 0, "digits-domains")
    recorder.add_placement(7, place, "discover")  # before discovery named the client: kept until it does
    recorder.add_client(3, "clean", node_id=7)
    with recorder.phase("lora"):
        recorder.add_placement(7, place)
        recorder.add_placement(7, place)
    assert recorder.clients[3].details["ran_on"] == {"discover": [place], "lora": [place]}
    nodes = recorder.to_dict()["nodes"]
    assert nodes == [{"node_id": place.get("node_id"), "node_address": place.get("node_address"), "host": place["host"],
                      "partitions": [3], "pids": [os.getpid()], "clients": 1}]


def test_a_failed_run_says_why_in_results_and_the_launcher_repeats_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    recorder = RunRecorder(tmp_path, "warmfed", 0, 0, "digits-domains")
    recorder.add_client(0, "clean", node_id=1)
    recorder.add_failure("lora", 1, "worker failed: NoWorkersLeftError: no Ray worker is left (nodes lost: bbbbbbbb)")
    assert "nodes lost: bbbbbbbb" in recorder.failure_reasons("lora")
    recorder.error = f"TooFewClientsError: phase 'lora': failures: {recorder.failure_reasons('lora')}"
    recorder.write()

    monkeypatch.setattr(launch, "count_clients", lambda config: 1)
    monkeypatch.setattr(launch, "visible_gpus", lambda: [])
    monkeypatch.setattr(launch.subprocess, "run", lambda command, **kwargs: subprocess.CompletedProcess(command, 0))
    monkeypatch.setattr(launch, "last_run_status", lambda env, app_dir: "finished:failed")
    stopped_with = "the ServerApp stopped with TooFewClientsError.*nodes lost: bbbbbbbb"
    with pytest.raises(launch.RunFailedError, match=stopped_with):
        launch.run_app({"output-dir": str(tmp_path)}, ROOT)

