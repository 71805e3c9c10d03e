"""Phase `lora`: every client fits a LoRA adapter on its own images and uploads it; the server keeps the
adapters that match the agreed backbone, rank, alpha and targets."""

from __future__ import annotations

from flwr.app import RecordDict

from warmfed_flwr.generative import load_backbone
from warmfed_flwr.generative.adapter import AdapterError, adapter_bytes, validate_adapter
from warmfed_flwr.logs import logger
from warmfed_flwr.run.context import RunContext
from warmfed_flwr.run.federation import TooFewClientsError
from warmfed_flwr.run.store import ClientAdapter
from warmfed_flwr.run.transport import record_to_arrays


DP_METRICS = ("dp-epsilon", "dp-delta", "dp-noise-multiplier")  # a private fit's spent budget, as its client reports it


def collect_adapters(run: RunContext) -> list[ClientAdapter]:
    """Ask every client for its adapter; keep the ones that pass validation, in partition order."""
    s = run.settings
    replies = run.send("lora", "train.lora", {c.node_id: RecordDict() for c in run.clients})
    expected = load_backbone(s.lora).adapter_shapes(s.lora)
    by_node = {c.node_id: c for c in run.clients}
    good: list[ClientAdapter] = []
    # partition order, not node-id order: node ids change between runs, the pool's order must not
    for node_id, content in sorted(replies.items(), key=lambda item: by_node[item[0]].partition_id):
        client = by_node[node_id]
        name = f"partition {client.partition_id} ({client.domain})"
        try:
            arrays = validate_adapter(
                record_to_arrays(content["adapter"]), dict(content["adapter-config"]), expected, s.lora, name
            )
        except (AdapterError, KeyError) as err:
            run.recorder.add_failure("lora", node_id, f"adapter rejected: {err}")
            logger.warning("[lora] adapter of %s rejected: %s", name, err)
            continue
        metrics = content["metrics"]
        counts = [int(v) for v in metrics["label-counts"]] if "label-counts" in metrics else None
        details = run.recorder.clients[client.partition_id].details
        details["adapter_bytes"] = adapter_bytes(arrays)
        details["fit_seconds"] = round(float(metrics["fit-seconds"]), 3)
        details |= {key.replace("-", "_"): float(metrics[key]) for key in DP_METRICS if key in metrics}
        good.append(ClientAdapter(client, arrays, counts))
    if len(good) < s.min_clients:
        raise TooFewClientsError(
            f"phase 'lora': only {len(good)} valid adapters, fewer than min-clients={s.min_clients}; "
            f"failures: {run.recorder.failure_reasons('lora')}"
        )
    return good
