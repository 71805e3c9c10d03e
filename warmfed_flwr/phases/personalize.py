"""The personalization phase shared by WarmFed/FGL (DSD) and fedavg-ft (plain fine-tuning)."""

from __future__ import annotations

from typing import Mapping

from flwr.app import ArrayRecord, ConfigRecord, RecordDict

from warmfed_flwr.phases.resilience import evaluate_on_others
from warmfed_flwr.run.context import RunContext
from warmfed_flwr.run.federation import SYNTHETIC_SHARE_KEY


def personalize(
    run: RunContext,
    global_arrays: ArrayRecord,
    dsd_mode: str,
    phase: str = "dsd",
    synthetic_shares: Mapping[int, ArrayRecord] | None = None,
) -> None:
    """Send the global model to every client for `train.dsd`; record global and personalized accuracy.

    The personalized accuracy is recorded on the client's own test split, on a label-balanced one
    where labels are skewed, and (`evaluate-others`) on other clients' test splits. `phase` names
    the phase in failure records (a snapshot's personalization has its own name). `synthetic_shares`
    (by partition id) go to their clients with the model, for DSD to train on.
    """
    contents = {
        c.node_id: RecordDict({"arrays": global_arrays, "config": ConfigRecord({"dsd-mode": dsd_mode})})
        for c in run.clients
    }
    for client in run.clients:
        if synthetic_shares and client.partition_id in synthetic_shares:
            contents[client.node_id][SYNTHETIC_SHARE_KEY] = synthetic_shares[client.partition_id]
    for node_id, content in run.send(phase, "train.dsd", contents).items():
        client = run.recorder.client_of_node(node_id)
        if client is None:
            continue
        metrics = content["metrics"]
        client.global_acc = float(metrics["global-acc"])
        client.personal_acc = float(metrics["personal-acc"])
        if "personal-acc-balanced" in metrics:
            client.personal_acc_balanced = float(metrics["personal-acc-balanced"])
        if "kept-epoch" in metrics:  # the epoch the validation share chose; 0: the global model was kept
            client.details["kept_epoch"] = int(metrics["kept-epoch"])
            client.details["validation_images"] = int(metrics["validation-images"])
    evaluate_on_others(run, phase)
