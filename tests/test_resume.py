"""Nothing lost: phase checkpoints in the run directory, and resuming a stopped run to the same numbers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from flwr.app import Context, Message

from warmfed_flwr.client.app import HANDLERS, Handler, build_client_app
from warmfed_flwr.client.classifier import handle_fit_round
from warmfed_flwr.client.context import partition_id
from warmfed_flwr.config import merge_run_config
from warmfed_flwr.run.artifacts import ArtifactCache
from warmfed_flwr.run.checkpoint import Checkpoint, ResumeError, check_resumable
from warmfed_flwr.run.federation import TooFewClientsError
from warmfed_flwr.run.results import RunRecorder


def crash_in_round(server_round: int) -> Handler:
    """A round handler whose partition 1 raises in `server_round`: with min-clients=2 the run stops there."""

    def handler(msg: Message, context: Context) -> Message:
        if partition_id(context) == 1 and int(msg.content["config"]["server-round"]) == server_round:
            raise RuntimeError(f"simulated crash in round {server_round}")
        return handle_fit_round(msg, context)

    return handler


def finished_phases(run_dir: Path) -> list[str]:
    return [entry["phase"] for entry in json.loads((run_dir / "checkpoint.json").read_text())["finished"]]


def numbers(results: dict) -> list[tuple]:
    """What must not depend on interruptions: accuracies, bytes, synthetic images, per-round accuracies."""
    clients = [
        (c["partition_id"], c["global_acc"], c["personal_acc"], c["bytes_up"], c["bytes_down"],
         c["details"]["adapter_bytes"], c["details"]["synthetic_images"])
        for c in results["clients"]
    ]
    return [clients, results["averages"], results["round_history"]]


def test_a_run_stopped_after_the_warm_start_and_after_round_1_resumes_to_the_uninterrupted_numbers(
    run_in_process, two_domain_folder, tmp_path
):
    config = {"method": "warmfed", "rounds": 2, "data.name": "imagefolder", "data.root": str(two_domain_folder)}
    reference = run_in_process({**config, "output-dir": str(tmp_path / "reference")}, num_supernodes=2)
    run_dir = tmp_path / "run"  # run_in_process's output-dir

    with pytest.raises(TooFewClientsError, match="round 1"):
        run_in_process(config, num_supernodes=2, client_app=build_client_app({**HANDLERS, "train.default": crash_in_round(1)}))
    assert finished_phases(run_dir) == ["lora", "warmstart-generate", "warmstart-train"]
    artifacts = run_dir / "artifacts"
    assert len(list(artifacts.glob("adapters-*/partition-*.safetensors"))) == 2
    assert len(list(artifacts.glob("pool-*.safetensors"))) == 1 and (artifacts / "model-warmstart-train.safetensors").is_file()

    with pytest.raises(TooFewClientsError, match="round 2"):
        run_in_process({**config, "resume": str(run_dir)}, num_supernodes=2,
                       client_app=build_client_app({**HANDLERS, "train.default": crash_in_round(2)}))
    assert finished_phases(run_dir)[3:] == ["round"] and (artifacts / "model-round-1.safetensors").is_file()

    resumed = run_in_process({**config, "resume": str(run_dir)}, num_supernodes=2)
    assert numbers(resumed) == numbers(reference)
    assert [(p["name"], p.get("resumed", False)) for p in resumed["phases"]] == [
        ("discover", False), ("lora", True), ("warmstart-generate", True), ("warmstart-train", True),
        ("rounds", False), ("dsd", False),
    ]
    assert resumed["failures"] == []
    final = [ArtifactCache(run / "artifacts").load_model("round-2") for run in (run_dir, tmp_path / "reference")]
    assert final[0].keys() == final[1].keys() and all(np.array_equal(final[0][k], final[1][k]) for k in final[0])
    # a completed run deletes the adapters it received (keep-adapters=false); pool and models stay
    for run in (run_dir, tmp_path / "reference"):
        assert not list((run / "artifacts").glob("adapters-*"))
        assert (run / "artifacts" / "model-round-2.safetensors").is_file()


def test_resume_refuses_a_run_with_other_settings_and_names_them(tmp_path):
    saved = merge_run_config({"seed": 1, "rounds": 2, "output-dir": str(tmp_path)})
    (tmp_path / "run_config.json").write_text(json.dumps(saved))
    check_resumable(tmp_path, {**saved, "output-dir": "/elsewhere", "resume": str(tmp_path), "keep-adapters": True})
    with pytest.raises(ResumeError, match=r"'resume'.*lora\.rank: 8 there, 4 now; seed: 1 there, 2 now"):
        check_resumable(tmp_path, {**saved, "seed": 2, "lora.rank": 4})
    with pytest.raises(ResumeError, match="not a run directory"):
        check_resumable(tmp_path / "missing", saved)


def test_resuming_into_another_directory_copies_the_checkpoint_and_deletes_both_adapter_copies(tmp_path):
    first = Checkpoint(tmp_path / "first")
    recorder = RunRecorder(tmp_path / "first", "warmfed", 0, 0, "digits-domains")
    first.store.save_adapter("k", 0, {"a": np.ones((2, 2), np.float32)}, {"label_counts": None})
    first.mark("lora", recorder, key="k", partitions=[0])

    second = Checkpoint.resume(tmp_path / "second", tmp_path / "first")
    assert second.entry("lora") == {"phase": "lora", "key": "k", "partitions": [0]}
    assert second.entry("warmstart-generate") is None and second.results["method"] == "warmfed"
    assert np.array_equal(second.store.load_adapter("k", 0)[0]["a"], np.ones((2, 2), np.float32))
    assert second.delete_adapters() == 2
    assert not list(tmp_path.rglob("*.safetensors"))
