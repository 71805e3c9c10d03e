"""The ClientApp: one handler per phase (the classifier's in `client_classifier`).

A client reads the run's settings from the run config Flower gives it (`context.run_config`:
pyproject.toml's defaults with the run's overrides, the same on the server and on every SuperNode,
simulated or real); a message carries only its phase's payload. The client's data and the diffusion
backbone are cached per process: Ray reuses its actor processes across phases.
"""

from __future__ import annotations

import time
from typing import Callable, Mapping

from flwr.app import ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from warmfed_flwr import seeds
from warmfed_flwr.client_classifier import (
    handle_cross_evaluate,
    handle_dsd,
    handle_evaluate,
    handle_fit_round,
    handle_local,
    handle_personalized,
)
from warmfed_flwr.client_context import (
    DataSource,
    client_data,
    node_data_root,
    node_domain,
    num_partitions,
    partition_id,
    run_settings,
    shared_client_data,
)
from warmfed_flwr.config import NODE_LOCAL
from warmfed_flwr.data.node_local import read_node_folder
from warmfed_flwr.generative import ClassLabels, load_backbone
from warmfed_flwr.generative.adapter import adapter_config
from warmfed_flwr.generative.private import dp_budget
from warmfed_flwr.generative.upload import SCALES, encode_adapter
from warmfed_flwr.run.transport import arrays_to_record
from warmfed_flwr.runtime.placement import report_placement
from warmfed_flwr.seeds import client_seed

Handler = Callable[[Message, Context], Message]


def handle_info(msg: Message, context: Context) -> Message:
    """Discovery: which partition and domain this client holds, how many images, of which classes.

    A node-local client lists its folder (nothing decoded) and reports its own class names, from
    which the server agrees on the federation's class list.
    """
    settings = run_settings(context)
    pid = partition_id(context)
    if settings.data.name == NODE_LOCAL:
        folder = read_node_folder(node_data_root(context), settings.data, pid)
        domain, class_names, num_train, num_test = node_domain(context), folder.class_names, len(folder.train), len(folder.test)
    else:
        cd = shared_client_data(settings.data, pid, num_partitions(context))
        domain, class_names, num_train, num_test = cd.domain, cd.class_names, len(cd.train), len(cd.test)
    info = ConfigRecord(
        {
            "partition-id": pid,
            "num-partitions": int(context.node_config.get("num-partitions", -1)),
            "domain": domain,
            "num-train": num_train,
            "num-test": num_test,
            "class-names": list(class_names),
        }
    )
    return Message(RecordDict({"info": info}), reply_to=msg)


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


HANDLERS: dict[str, Handler] = {
    "query.info": handle_info,
    "query.personalized": handle_personalized,
    "train.lora": handle_lora,
    "train.default": handle_fit_round,
    "train.local": handle_local,
    "train.dsd": handle_dsd,
    "evaluate.default": handle_evaluate,
    "evaluate.cross": handle_cross_evaluate,
}


def build_client_app(handlers: Mapping[str, Handler] = HANDLERS) -> ClientApp:
    """A ClientApp with one handler per message type ('<category>.<action>'); every reply says where it ran."""
    client_app = ClientApp(mods=[report_placement])
    for message_type, handler in handlers.items():
        category, action = message_type.split(".")
        getattr(client_app, category)(action)(handler)
    return client_app


app = build_client_app()
