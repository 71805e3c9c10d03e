"""The LoRA phase on a client (`train.lora`): fit an adapter of the diffusion backbone on this client's images."""

from __future__ import annotations

import time

from flwr.app import ConfigRecord, Context, Message, MetricRecord, RecordDict

from warmfed_flwr import seeds
from warmfed_flwr.client.context import DataSource, client_data, run_settings
from warmfed_flwr.generative import ClassLabels, load_backbone
from warmfed_flwr.generative.adapter import adapter_config
from warmfed_flwr.generative.private import dp_budget
from warmfed_flwr.generative.upload import SCALES, encode_adapter
from warmfed_flwr.run.transport import arrays_to_record
from warmfed_flwr.seeds import client_seed


def handle_lora(msg: Message, context: Context, load_data: DataSource = client_data) -> Message:
    """Fit the LoRA adapter on this client's train split; reply with it (in `lora.upload-dtype`), its settings and the
    label counts."""
    settings = run_settings(context)
    cd = load_data(settings, context, msg)
    backbone = load_backbone(settings.lora)
    start = time.perf_counter()
    adapter = backbone.fit_lora(
        cd.train.float_images(),
        ClassLabels(cd.train.labels, cd.class_names),
        settings.lora,
        client_seed(settings.seed, cd.partition_id, seeds.LORA_FIT),
        settings.generate.prompt_template,
        progress_label=f"partition {cd.partition_id}",
    )
    metrics: dict[str, int | float | list[int]] = {
        "num-examples": len(cd.train),
        "fit-seconds": time.perf_counter() - start,
    }
    if settings.lora.send_label_counts:
        metrics["label-counts"] = cd.train.class_counts(len(cd.class_names))
    if settings.lora.dp_epsilon > 0:
        budget = dp_budget(settings.lora, len(cd.train))
        metrics |= {"dp-epsilon": budget.epsilon, "dp-delta": budget.delta, "dp-noise-multiplier": budget.noise_multiplier}
    upload = encode_adapter(adapter, settings.lora.upload_dtype)
    content = RecordDict(
        {
            "adapter": arrays_to_record(upload.tensors),
            "adapter-config": ConfigRecord(adapter_config(settings.lora)),
            "metrics": MetricRecord(metrics),
        }
    )
    if upload.scales is not None:
        content["adapter-scales"] = arrays_to_record({SCALES: upload.scales})
    return Message(content, reply_to=msg)
