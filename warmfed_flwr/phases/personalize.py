"""The personalization phase shared by WarmFed/FGL (DSD) and fedavg-ft (plain fine-tuning)."""

from __future__ import annotations

from flwr.app import ArrayRecord, ConfigRecord, RecordDict

from warmfed_flwr.phases.resilience import evaluate_on_others
from warmfed_flwr.run.context import RunContext


def personalize(run: RunContext, global_arrays: ArrayRecord, dsd_mode: str, phase: str = "dsd") -> None:
    """Send the global model to every client for `train.dsd`; record global and personalized accuracy.

    The personalized accuracy is recorded on the client's own test split, on a label-balanced one
    where labels are skewed, and (`evaluate-others`) on other clients' test splits. `phase` names
    the phase in failure records (a snapshot's personalization has its own name).
    """
    contents = {
        c.node_id: RecordDict({"arrays": global_arrays, "config": ConfigRecord({"dsd-mode": dsd_mode})})
        for c in run.clients
    }
    for node_id, content in run.send(phase, "train.dsd", contents).items():
        client = run.recorder.client_of_node(node_id)
        if client is None:
            continue
        metrics = content["metrics"]
        client.global_acc = float(metrics["global-acc"])
        client.personal_acc = float(metrics["personal-acc"])
        if "personal-acc-balanced" in metrics:
            client.personal_acc_balanced = float(metrics["personal-acc-balanced"])
    evaluate_on_others(run, phase)
