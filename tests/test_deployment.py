"""scripts/deploy_local.py: a TLS SuperLink with SuperNode authentication on loopback, real SuperNodes, `flwr run`,
and SuperNodes that each hold only their own image folder.

The TLS run also kills one of its three SuperNodes after discovery and kills and restarts another: the same
deployment shows that a run goes on without a dead SuperNode and asks a restarted one again. It runs at the same
time as the deployment on the nodes' own folders: each deployment costs a minute or two, most of it waiting.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import psutil
from safetensors.numpy import load_file

# scripts/ is on pytest's pythonpath
from deploy_local import Deployment, make_node_key, make_tls_files, threads_per_supernode
from expect import assert_accuracies

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "deploy_local.py"


def _run_script(args: list[str], timeout: float) -> tuple[int, str]:
    """Run deploy_local.py; on a timeout send it SIGTERM so that it stops its processes, then fail."""
    process = subprocess.Popen([sys.executable, str(SCRIPT), *args], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, cwd=ROOT)
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=60)
        raise AssertionError(f"deploy_local.py did not finish in {timeout:.0f} s:\n{output[-5000:]}") from None
    finally:
        if process.poll() is None:  # interrupted: the script stops its processes on SIGTERM
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=60)
    return process.returncode, output


def check_the_run_with_a_dying_and_a_restarted_supernode(returncode: int, output: str, work: Path) -> None:
    """After discovery SuperNode 1 died for good and SuperNode 2 died and was started again with its key."""
    assert returncode == 0, output[-5000:]
    assert f"each SuperNode gets {threads_per_supernode(3)} thread(s)" in output  # the cores shared out
    assert re.search(r"^killed supernode-1 \(pid \d+\)", output, flags=re.MULTILINE)
    assert re.search(r"^restarted supernode-2 as node \d+", output, flags=re.MULTILINE)

    results = json.loads((work / "run" / "results.json").read_text())
    assert results["method"] == "fedavg" and [r["round"] for r in results["round_history"]] == [1]
    assert sorted(client["partition_id"] for client in results["clients"]) == [0, 1, 2]
    # the dead SuperNode is a failure of partition 1 in the round's training (and in its evaluation, when the
    # SuperLink still listed it then) ...
    assert results["failures"] and {f["partition_id"] for f in results["failures"]} == {1}
    assert {f["phase"] for f in results["failures"]} == {"rounds-1"}
    assert any(f["reason"].startswith("SuperNode unavailable") for f in results["failures"])
    # ... the restarted one was asked again once and answered: both live clients trained and were evaluated
    assert [(r["partition_id"], r["attempt"]) for r in results["retries"]] == [(2, 1)]
    assert results["retries"][0]["reason"].startswith("SuperNode unavailable")
    assert all(len(r["global_acc"]) == 2 for r in results["round_history"])
    live = [c for c in results["clients"] if c["partition_id"] != 1]
    assert_accuracies(live, [0, 2], ["global_acc"])
    online = [int(n) for n in re.search(r"SuperNodes online: \[([\d, ]+)\]", output).group(1).split(",")]
    assert sorted(client["node_id"] for client in results["clients"]) == sorted(online)

    superlink_log = (work / "logs" / "superlink.log").read_text()
    superlink_port = re.search(r"^started superlink .* --port (\d+)$", output, flags=re.MULTILINE).group(1)
    assert f"running on https://127.0.0.1:{superlink_port}" in superlink_log
    assert superlink_log.count("[Fleet.ActivateNode] Activated node_id=") == 4  # three, and the restarted one
    started = [int(pid) for pid in re.findall(r"^started \S+ \(pid (\d+)\)", output, flags=re.MULTILINE)]
    stopped = [int(pid) for pid in re.findall(r"^stopped \S+ \(pid (\d+),", output, flags=re.MULTILINE)]
    assert len(started) == 5 and sorted(stopped) == sorted(started)
    assert not any(psutil.pid_exists(pid) for pid in started)


def test_supernode_with_an_unregistered_key_is_refused(tmp_path):
    tls = make_tls_files(tmp_path / "tls")
    registered = make_node_key(tmp_path / "keys", "registered")
    intruder = make_node_key(tmp_path / "keys", "intruder")
    with Deployment(tmp_path, tls, supernode_threads=1) as deployment:
        deployment.start_superlink()
        registered_id = deployment.register(registered)
        process = deployment.start_supernode("intruder", intruder, partition_id=0, num_partitions=1)
        assert psutil.Process(process.pid).environ()["OMP_NUM_THREADS"] == "1"  # its ClientApps inherit it
        superlink_pid = deployment.processes[0][1].pid
        returncode = process.wait(timeout=30)
        nodes = deployment.nodes()
    assert returncode != 0
    assert "Failed to activate SuperNode" in deployment.log_path("intruder").read_text()
    assert "No SuperNode found with the given public key" in deployment.log_path("superlink").read_text()
    assert [(int(node["node-id"]), node["status"]) for node in nodes] == [(registered_id, "registered")]
    assert not psutil.pid_exists(superlink_pid) and deployment.processes == []


NODE_CLASSES = (("0", "1", "2", "3", "4", "5"), ("3", "4", "5", "6", "7", "8"), ("0", "1", "2", "7", "8", "9"))
ISOLATE = os.geteuid() == 0  # hiding the other folders takes a mount namespace per SuperNode, which needs root


def node_folders(three_domain_folder: Path, root: Path) -> list[Path]:
    """Three hospitals' folders, each a domain of its own with six classes, no two with the same six."""
    domains = sorted(p.name for p in three_domain_folder.iterdir())
    folders = []
    for k, (domain, classes) in enumerate(zip(domains, NODE_CLASSES)):
        folder = root / f"hospital-{k}"
        for name in classes:
            shutil.copytree(three_domain_folder / domain / name, folder / name)
        folders.append(folder)
    return folders


def check_the_run_on_own_folders(returncode: int, output: str, work: Path, folders: list[Path]) -> None:
    """Three SuperNodes, each with its own folder of other classes, none able to see the others' folders."""
    assert returncode == 0, output[-5000:]
    for k, folder in enumerate(folders):
        assert (f"supernode-{k} sees its own folder {folder} and nothing of the 2 others" in output) == ISOLATE

    results = json.loads((work / "run" / "results.json").read_text())
    assert results["dataset"] == "node-local" and results["failures"] == []
    assert results["class_names"] == [str(digit) for digit in range(10)]  # the union, in one order
    assert [c["domain"] for c in results["clients"]] == [f.name for f in folders]
    assert_accuracies(results["clients"], range(len(folders)), ["global_acc", "personal_acc"])
    # each client's labels were mapped to the agreed list: its synthetic share has only its own classes
    (pool_file,) = (work / "run" / "artifacts").glob("pool-*.safetensors")
    pool = load_file(str(pool_file))
    for k, classes in enumerate(NODE_CLASSES):
        assert {str(label) for label in np.unique(pool[f"labels-{k}"])} == set(classes)


def test_two_deployments_at_once_tls_with_a_dying_and_a_restarted_supernode_and_nodes_with_own_folders(
    three_domain_folder, tmp_path
):
    """Two federations on loopback at the same time, each with its own SuperLink and three SuperNodes: (1) TLS and
    SuperNode authentication, FedAvg 1 round on a shared image folder, SuperNode 1 killed for good after discovery
    and SuperNode 2 killed and restarted; (2) WarmFed on three SuperNodes that each hold only their own folder (other
    classes each) and, as root, cannot see the others'. Both mostly wait (a SuperLink notices a dead SuperNode after
    about 60 s of missed heartbeats; Flower polls every 3 s), so running them side by side costs little more than
    the longer one: each took 1.5-2.5 minutes alone."""
    faulty_work, own_work = tmp_path / "deploy-faults", tmp_path / "deploy-own-folders"
    folders = node_folders(three_domain_folder, tmp_path / "nodes")
    overrides = (f'method="fedavg" rounds=1 min-clients=2 retry-wait=25 data.name="imagefolder" '
                 f'data.root="{three_domain_folder}"')
    with ThreadPoolExecutor(max_workers=2) as pool:
        faulty = pool.submit(_run_script, ["--supernodes", "3", "--work-dir", str(faulty_work), "--run-config",
                                           overrides, "--kill-supernode", "1", "--restart-supernode", "2"], 500)
        own = pool.submit(_run_script, ["--work-dir", str(own_work), "--node-folders", *map(str, folders),
                                        *(["--isolate-node-folders"] if ISOLATE else []),
                                        "--run-config", "method=\"warmfed\" rounds=0 min-clients=3"], 600)
    check_the_run_with_a_dying_and_a_restarted_supernode(*faulty.result(), faulty_work)
    check_the_run_on_own_folders(*own.result(), own_work, folders)
