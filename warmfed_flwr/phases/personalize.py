"""The personalization phase shared by WarmFed/FGL (DSD) and fedavg-ft (plain fine-tuning)."""

from __future__ import annotations

from flwr.app import ArrayRecord, ConfigRecord, RecordDict
from flwr.serverapp import Grid

from warmfed_flwr.config import Settings
from warmfed_flwr.run.federation import ClientInfo, send_phase
from warmfed_flwr.run.results import RunRecorder


def personalize(
    grid: Grid,
    recorder: RunRecorder,
    clients: list[ClientInfo],
    global_arrays: ArrayRecord,
    settings: Settings,
    dsd_mode: str,
    phase: str = "dsd",
) -> None:
    """Send the global model to every client for `train.dsd`; record global and personalized accuracy.

    `phase` names the phase in failure records (a snapshot's personalization has its own name).
    """
    contents = {
        c.node_id: RecordDict({"arrays": global_arrays, "config": ConfigRecord({"dsd-mode": dsd_mode})})
        for c in clients
    }
    replies = send_phase(grid, recorder, phase, "train.dsd", contents, settings.timeout, settings.min_clients)
    for node_id, content in replies.items():
        client = recorder.client_of_node(node_id)
        if client is None:
            continue
        metrics = content["metrics"]
        client.global_acc = float(metrics["global-acc"])
        client.personal_acc = float(metrics["personal-acc"])
