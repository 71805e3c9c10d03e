"""Client faults in every phase: a ClientApp that raises and one that answers after the phase timeout."""

from __future__ import annotations

import time

from flwr.app import Context, Message

from warmfed_flwr.client.app import HANDLERS, Handler, build_client_app
from warmfed_flwr.client.context import partition_id, run_settings

TIMEOUT = 15.0  # seconds; each phase's healthy replies must come within it, also on a loaded CI machine
PHASES = {"train.lora": "lora", "train.default": "rounds-1", "train.dsd": "dsd"}
# In every phase one client raises and one answers only after the timeout; partitions 1 and 2 take turns
CRASHING = {"train.lora": 1, "train.default": 2, "train.dsd": 1}
HANGING = {"train.lora": 2, "train.default": 1, "train.dsd": 2}


def crash_or_hang(message_type: str) -> Handler:
    """The phase's handler, except that its crashing partition raises and its hanging one replies only after the
    timeout."""
    handler = HANDLERS[message_type]

    def faulty(msg: Message, context: Context) -> Message:
        if partition_id(context) == CRASHING[message_type]:
            raise RuntimeError(f"simulated crash in {message_type}")
        if partition_id(context) == HANGING[message_type]:
            time.sleep(run_settings(context).timeout + 2)
        return handler(msg, context)

    return faulty


def test_run_completes_without_a_crashing_and_a_hanging_client_in_each_phase(run_in_process, three_domain_folder,
                                                                            tmp_path):
    """One run: in `train.lora`, the rounds and `train.dsd` a client raises and another hangs; a client that failed
    one phase is still asked in the next ones, and only partition 0 passes them all."""
    app = build_client_app({**HANDLERS, **{message_type: crash_or_hang(message_type) for message_type in PHASES}})
    results = run_in_process(
        {"method": "warmfed", "rounds": 1, "data.name": "imagefolder", "data.root": str(three_domain_folder),
         "min-clients": 1, "timeout": TIMEOUT, "keep-adapters": True,
         "evaluate-others": 2},  # the cross-evaluation must skip the failed DSDs
        num_supernodes=3,
        client_app=app,
    )
    failures = {(f["phase"], f["partition_id"]): f["reason"] for f in results["failures"]}
    assert set(failures) == {(PHASES[message_type], pid) for faulty in (CRASHING, HANGING)
                             for message_type, pid in faulty.items()}
    for message_type, phase in PHASES.items():
        crash = failures[(phase, CRASHING[message_type])]
        assert crash.startswith("client error:") and f"simulated crash in {message_type}" in crash
        assert failures[(phase, HANGING[message_type])] == f"no reply within {TIMEOUT:g} s"
    assert [p["name"] for p in results["phases"]][-1] == "dsd"
    clients = {c["partition_id"]: c for c in results["clients"]}
    assert {pid for pid, c in clients.items() if c["personal_acc"] is not None} == {0}
    assert [r["round"] for r in results["round_history"]] == [1]
    assert len(results["round_history"][0]["global_acc"]) == 3  # every client evaluated the round's model
    # keep-adapters=true: the adapters that passed, and only those, stay in the run directory, in peft's format
    kept = sorted((tmp_path / "run" / "adapters").glob("partition-*/pytorch_lora_weights.safetensors"))
    assert {int(p.parent.name.removeprefix("partition-")) for p in kept} == {0}
    assert all((p.parent / "adapter_config.json").is_file() for p in kept)
    assert not list((tmp_path / "run" / "artifacts").glob("adapters-*/*"))
