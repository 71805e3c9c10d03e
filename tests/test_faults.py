"""Client faults in every phase: a ClientApp that raises and one that answers after the phase timeout."""

from __future__ import annotations

import time

import pytest
from flwr.app import Context, Message

from warmfed_flwr.client import HANDLERS, Handler, build_client_app, partition_id, run_settings

TIMEOUT = 15.0  # seconds; each phase's healthy replies must come within it, also on a loaded CI machine
FAULTY_PHASES = {"train.lora": "lora", "train.default": "rounds-1", "train.dsd": "dsd"}


def crash_or_hang(message_type: str) -> Handler:
    """The phase's handler, except that partition 1 raises and partition 2 replies only after the timeout."""
    handler = HANDLERS[message_type]

    def faulty(msg: Message, context: Context) -> Message:
        if partition_id(context) == 1:
            raise RuntimeError(f"simulated crash in {message_type}")
        if partition_id(context) == 2:
            time.sleep(run_settings(context).timeout + 2)
        return handler(msg, context)

    return faulty


@pytest.mark.parametrize("message_type", sorted(FAULTY_PHASES))
def test_run_completes_without_a_crashing_and_a_hanging_client(message_type, run_in_process, three_domain_folder, tmp_path):
    app = build_client_app({**HANDLERS, message_type: crash_or_hang(message_type)})
    results = run_in_process(
        {"method": "warmfed", "rounds": 1, "data.name": "imagefolder", "data.root": str(three_domain_folder),
         "min-clients": 1, "timeout": TIMEOUT, "keep-adapters": True,
         "evaluate-others": 2 if message_type == "train.dsd" else 0},  # the cross-evaluation must skip failed DSDs
        num_supernodes=3,
        client_app=app,
    )
    phase = FAULTY_PHASES[message_type]
    failures = {(f["phase"], f["partition_id"]): f["reason"] for f in results["failures"]}
    assert set(failures) == {(phase, 1), (phase, 2)}
    assert failures[(phase, 1)].startswith("client error:") and f"simulated crash in {message_type}" in failures[(phase, 1)]
    assert failures[(phase, 2)] == f"no reply within {TIMEOUT:g} s"
    assert [p["name"] for p in results["phases"]][-1] == "dsd"
    clients = {c["partition_id"]: c for c in results["clients"]}
    personalized = {pid for pid, c in clients.items() if c["personal_acc"] is not None}
    assert personalized == ({0} if phase == "dsd" else {0, 1, 2})
    assert [r["round"] for r in results["round_history"]] == [1]
    # keep-adapters=true: the adapters that passed, and only those, stay in the run directory, in peft's format
    kept = sorted((tmp_path / "run" / "adapters").glob("partition-*/pytorch_lora_weights.safetensors"))
    assert {int(p.parent.name.removeprefix("partition-")) for p in kept} == ({0} if phase == "lora" else {0, 1, 2})
    assert all((p.parent / "adapter_config.json").is_file() for p in kept)
    assert not list((tmp_path / "run" / "artifacts").glob("adapters-*/*"))
