"""Phase `lora`: every client fits a LoRA adapter on its own images and uploads it; the server keeps the
adapters that match the agreed backbone, rank, alpha, targets and upload dtype, decoded to float32."""

from __future__ import annotations

from flwr.app import RecordDict

from warmfed_flwr.generative import load_backbone
from warmfed_flwr.generative.adapter import AdapterError, validate_adapter
from warmfed_flwr.generative.upload import SCALES, EncodedAdapter
from warmfed_flwr.logs import logger
from warmfed_flwr.run.context import RunContext
from warmfed_flwr.run.federation import TooFewClientsError
from warmfed_flwr.run.store import ClientAdapter, KeepAdapter
from warmfed_flwr.run.transport import record_to_arrays


DP_METRICS = ("dp-epsilon", "dp-delta", "dp-noise-multiplier")  # a private fit's spent budget, as its client reports it


def collect_adapters(run: RunContext, keep: KeepAdapter) -> list[ClientAdapter]:
    """Ask every client for its adapter; `keep` each that passes validation as it arrives (the server holds one
    adapter at a time); the kept ones in partition order."""
    s = run.settings
    expected = load_backbone(s.lora).adapter_shapes(s.lora)
    by_node = {c.node_id: c for c in run.clients}
    good: list[ClientAdapter] = []
    for node_id, content in run.stream("lora", "train.lora", {c.node_id: RecordDict() for c in run.clients}):
        client = by_node[node_id]
        name = f"partition {client.partition_id} ({client.domain})"
        try:
            scales = record_to_arrays(content["adapter-scales"])[SCALES] if "adapter-scales" in content else None
            sent = EncodedAdapter(record_to_arrays(content["adapter"]), scales)
            arrays = validate_adapter(sent, dict(content["adapter-config"]), expected, s.lora, name)
        except (AdapterError, KeyError) as err:
            run.recorder.add_failure("lora", node_id, f"adapter rejected: {err}")
            logger.warning("[lora] adapter of %s rejected: %s", name, err)
            continue
        metrics = content["metrics"]
        counts = [int(v) for v in metrics["label-counts"]] if "label-counts" in metrics else None
        details = run.recorder.clients[client.partition_id].details
        details["adapter_bytes"] = sent.nbytes()
        details["fit_seconds"] = round(float(metrics["fit-seconds"]), 3)
        details |= {key.replace("-", "_"): float(metrics[key]) for key in DP_METRICS if key in metrics}
        good.append(keep(client, arrays, counts))
    if len(good) < s.min_clients:
        raise TooFewClientsError(
            f"phase 'lora': only {len(good)} valid adapters, fewer than min-clients={s.min_clients}; "
            f"failures: {run.recorder.failure_reasons('lora')}"
        )
    # partition order, not arrival order: node ids and arrivals change between runs, the pool's order must not
    return sorted(good, key=lambda adapter: adapter.client.partition_id)
