"""The ClientApp: one handler per phase.

A client reads the run's settings from the run config Flower gives it (`context.run_config`:
pyproject.toml's defaults with the run's overrides, the same on the server and on every SuperNode,
simulated or real); a message carries only its phase's payload. The client's data and the diffusion
backbone are cached per process: Ray reuses its actor processes across phases.
"""

from __future__ import annotations

import time
from dataclasses import replace
from functools import lru_cache
from typing import Callable, Mapping

import torch
from flwr.app import ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from warmfed_flwr import data, seeds
from warmfed_flwr.config import NODE_LOCAL, DataSettings, Settings
from warmfed_flwr.data.errors import DataError
from warmfed_flwr.data.node_local import DATA_ROOT_KEY, DOMAIN_KEY, HELP, node_client_data, read_node_folder
from warmfed_flwr.data.types import ClientData
from warmfed_flwr.generative import ClassLabels, load_backbone
from warmfed_flwr.generative.adapter import adapter_config
from warmfed_flwr.learning.dsd import train_personalized
from warmfed_flwr.learning.models import build_classifier
from warmfed_flwr.learning.training import (
    Schedule,
    classifier_schedule,
    evaluate_accuracy,
    pick_device,
    train_supervised,
)
from warmfed_flwr.logs import Progress
from warmfed_flwr.run.federation import AGREED_CLASSES_KEY
from warmfed_flwr.run.transport import arrays_to_record, load_record_into, model_to_record
from warmfed_flwr.seeds import client_seed

Handler = Callable[[Message, Context], Message]


def run_settings(context: Context) -> Settings:
    """The run's settings, from the run config Flower gives this ClientApp."""
    return Settings.from_run_config(context.run_config)


def agreed_class_names(msg: Message) -> tuple[str, ...]:
    """The class list the server agreed on at discovery (node-local runs send it with every later message)."""
    record = msg.content.config_records.get(AGREED_CLASSES_KEY)
    if record is None:
        raise ValueError(f"message {msg.metadata.message_type!r} carries no agreed class names ('{AGREED_CLASSES_KEY}')")
    return tuple(str(name) for name in record["class-names"])


def partition_id(context: Context) -> int:
    """This SuperNode's partition, from its node config."""
    try:
        return int(context.node_config["partition-id"])
    except KeyError as err:
        raise KeyError(
            "node config key 'partition-id' is missing: start the SuperNode with "
            "--node-config 'partition-id=K num-partitions=N'"
        ) from err


def node_data_root(context: Context) -> str:
    """The SuperNode's own image folder (node config `data-root`) of a node-local run."""
    root = str(context.node_config.get(DATA_ROOT_KEY, ""))
    if not root:
        raise DataError(f"data.name={NODE_LOCAL} but this SuperNode's node config has no '{DATA_ROOT_KEY}'; {HELP}")
    return root


def node_domain(context: Context) -> str:
    """How results name a node-local client's data: node config `domain`, else node-<partition-id>."""
    return str(context.node_config.get(DOMAIN_KEY, f"node-{partition_id(context)}"))


def num_partitions(context: Context) -> int | None:
    """The federation's size this SuperNode was started with (node config `num-partitions`), if given."""
    return int(context.node_config.get("num-partitions", 0)) or None


@lru_cache(maxsize=1)
def _shared_client_data(settings: DataSettings, pid: int, partitions: int | None) -> ClientData:
    return data.load_client_data(settings, pid, partitions)


@lru_cache(maxsize=1)
def _node_client_data(root: str, settings: DataSettings, pid: int, domain: str, agreed: tuple[str, ...]) -> ClientData:
    return node_client_data(root, settings, pid, domain, agreed)


def client_data(settings: Settings, context: Context, msg: Message) -> ClientData:
    """This client's train/test split, decoded; a process keeps only the last client's it served.

    Node-local runs read the SuperNode's own folder, with labels numbered by the class list agreed
    at discovery; otherwise the client takes its partition of the run's data set. In a simulation
    one worker serves many clients in turn, so it holds one share at a time.
    """
    if settings.data.name == NODE_LOCAL:
        return _node_client_data(
            node_data_root(context), settings.data, partition_id(context), node_domain(context), agreed_class_names(msg)
        )
    return _shared_client_data(settings.data, partition_id(context), num_partitions(context))


def client_schedule(settings: Settings, pid: int, epochs: int, purpose: int) -> Schedule:
    """How this client trains a model: the run's batches, rate and shift augmentation, the client's seed for `purpose`."""
    return classifier_schedule(settings.train, epochs, client_seed(settings.seed, pid, purpose))


def global_model(settings: Settings, num_classes: int, msg: Message) -> torch.nn.Module:
    """The classifier carried by the message's 'arrays' record."""
    model = build_classifier(settings.model.name, num_classes, settings.data.image_size)
    return load_record_into(model, msg.content.array_records["arrays"])


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
        cd = _shared_client_data(settings.data, pid, num_partitions(context))
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


def handle_lora(msg: Message, context: Context) -> Message:
    """Fit the LoRA adapter on this client's train split; reply with it, its settings and the label counts."""
    settings = run_settings(context)
    cd = client_data(settings, context, msg)
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
    content = RecordDict(
        {
            "adapter": arrays_to_record(adapter),
            "adapter-config": ConfigRecord(adapter_config(settings.lora)),
            "metrics": MetricRecord(metrics),
        }
    )
    return Message(content, reply_to=msg)


def handle_fit_round(msg: Message, context: Context) -> Message:
    """One FedAvg/FedProx/FedAdam round: train the received model on local data, send it back."""
    settings = run_settings(context)
    cd = client_data(settings, context, msg)
    model = global_model(settings, len(cd.class_names), msg)
    config = msg.content.config_records.get("config", ConfigRecord())
    mu = float(config.get("proximal-mu", 0.0))
    server_round = int(config.get("server-round", 0))
    schedule = client_schedule(settings, cd.partition_id, settings.train.local_epochs, seeds.ROUND + server_round)
    loss = train_supervised(model, cd.train, schedule, proximal_mu=mu)
    metrics = MetricRecord({"num-examples": len(cd.train), "train-loss": loss})
    return Message(RecordDict({"arrays": model_to_record(model.cpu()), "metrics": metrics}), reply_to=msg)


def handle_local(msg: Message, context: Context) -> Message:
    """The `local` baseline: train the received initial model on local data alone; reply with it and its accuracy."""
    settings = run_settings(context)
    cd = client_data(settings, context, msg)
    model = global_model(settings, len(cd.class_names), msg)
    epochs = settings.train.local_only_epochs
    schedule = client_schedule(settings, cd.partition_id, epochs, seeds.LOCAL_TRAINING)
    train_supervised(model, cd.train, schedule,
                     progress=Progress(f"[local] partition {cd.partition_id}", epochs, unit="epoch"))
    metrics = MetricRecord({"num-examples": len(cd.train), **personalized_metrics(model, cd, settings, context)})
    return Message(RecordDict({"arrays": model_to_record(model.cpu()), "metrics": metrics}), reply_to=msg)


PERSONALIZED_MODEL = "personalized-model"  # context.state record: the last personalized model, for `query.personalized`


def personalized_metrics(model: torch.nn.Module, cd: ClientData, settings: Settings, context: Context) -> dict[str, float]:
    """The personalized model's accuracy on the client's test split and, where labels are skewed in a shared
    data set, on a label-balanced test split of its domain; kept in the node state for `query.personalized`.
    """
    device = pick_device()
    metrics = {"personal-acc": evaluate_accuracy(model, cd.test, device)}
    if settings.data.partitioning != "iid" and settings.data.name != NODE_LOCAL:
        balanced = data.balanced_domain_test(settings.data, cd.partition_id, num_partitions(context))
        metrics["personal-acc-balanced"] = evaluate_accuracy(model, balanced, device)
    if settings.evaluate_others > 0:
        context.state[PERSONALIZED_MODEL] = model_to_record(model.cpu())
    return metrics


def handle_dsd(msg: Message, context: Context) -> Message:
    """Personalize the received global model by DSD (mode from the message's config); reply with both accuracies."""
    settings = run_settings(context)
    cd = client_data(settings, context, msg)
    teacher = global_model(settings, len(cd.class_names), msg)
    device = pick_device()
    config = msg.content.config_records.get("config", ConfigRecord())
    dsd = settings.dsd
    if "dsd-mode" in config:
        dsd = replace(dsd, mode=str(config["dsd-mode"]))
    global_acc = evaluate_accuracy(teacher, cd.test, device)
    schedule = client_schedule(settings, cd.partition_id, dsd.epochs, seeds.DSD)
    student = train_personalized(teacher, cd.train, dsd, schedule, progress_label=f"partition {cd.partition_id}")
    metrics = MetricRecord(
        {"num-examples": len(cd.train), "global-acc": global_acc, **personalized_metrics(student, cd, settings, context)}
    )
    return Message(RecordDict({"metrics": metrics}), reply_to=msg)


def handle_personalized(msg: Message, context: Context) -> Message:
    """This node's last personalized model (from its state), for evaluating it on other clients' test splits."""
    if PERSONALIZED_MODEL not in context.state:
        raise RuntimeError(f"partition {partition_id(context)}: no personalized model in this node's state yet")
    return Message(RecordDict({"arrays": context.state[PERSONALIZED_MODEL]}), reply_to=msg)


def handle_evaluate(msg: Message, context: Context) -> Message:
    """Accuracy of the received global model on this client's test split."""
    settings = run_settings(context)
    cd = client_data(settings, context, msg)
    model = global_model(settings, len(cd.class_names), msg)
    metrics = MetricRecord(
        {
            "num-examples": len(cd.test),
            "accuracy": evaluate_accuracy(model, cd.test, pick_device()),
        }
    )
    return Message(RecordDict({"metrics": metrics}), reply_to=msg)


def handle_cross_evaluate(msg: Message, context: Context) -> Message:
    """Accuracy on this client's test split of every model in the message (records named 'model-<pid>')."""
    settings = run_settings(context)
    cd = client_data(settings, context, msg)
    device = pick_device()
    accuracies: dict[str, float] = {}
    for name, record in msg.content.array_records.items():
        model = build_classifier(settings.model.name, len(cd.class_names), settings.data.image_size)
        accuracies[name] = evaluate_accuracy(load_record_into(model, record), cd.test, device)
    return Message(RecordDict({"metrics": MetricRecord(accuracies)}), reply_to=msg)


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
    """A ClientApp with one handler per message type ('<category>.<action>')."""
    client_app = ClientApp()
    for message_type, handler in handlers.items():
        category, action = message_type.split(".")
        getattr(client_app, category)(action)(handler)
    return client_app


app = build_client_app()
