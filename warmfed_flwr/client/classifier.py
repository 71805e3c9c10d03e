"""The ClientApp's classifier handlers: federated rounds (FedAvg, FedProx, FedAdam, FedBN, Ditto), the
`local` baseline, personalization (DSD, fine-tuning, or the personal model kept during the rounds)
and evaluation, of its own and of other clients' models."""

from __future__ import annotations

import copy
from dataclasses import replace

import torch
from flwr.app import ConfigRecord, Context, Message, MetricRecord, RecordDict

from warmfed_flwr import data, seeds
from warmfed_flwr.client.context import (
    DataSource,
    client_data,
    client_schedule,
    num_partitions,
    partition_id,
    run_settings,
)
from warmfed_flwr.config import NODE_LOCAL, PERSONAL_IN_ROUNDS, DsdSettings, Settings
from warmfed_flwr.data import concatenated
from warmfed_flwr.data.types import ClientData, ImageSplit, pixels_as
from warmfed_flwr.learning.dsd import train_personalized
from warmfed_flwr.learning.models import build_classifier
from warmfed_flwr.learning.personal import (
    keep_local_norm,
    keep_personal_model,
    load_with_local_norm,
    personal_model,
    without_batch_norm,
)
from warmfed_flwr.learning.training import evaluate_accuracy, pick_device, train_supervised
from warmfed_flwr.learning.validation import BestEpoch, hold_out
from warmfed_flwr.logs import Progress
from warmfed_flwr.run.federation import SYNTHETIC_SHARE_KEY
from warmfed_flwr.run.transport import load_record_into, model_to_record, record_to_split
from warmfed_flwr.seeds import client_seed


def global_model(settings: Settings, num_classes: int, msg: Message, context: Context) -> torch.nn.Module:
    """The classifier carried by the message's 'arrays' record (FedBN: with this client's own batch-norm layers)."""
    model = build_classifier(settings.model.name, num_classes, settings.data.image_size)
    received = msg.content.array_records["arrays"]
    if settings.method == "fedbn":
        return load_with_local_norm(model, received, context.state)
    return load_record_into(model, received)


def handle_fit_round(msg: Message, context: Context, load_data: DataSource = client_data) -> Message:
    """One round of FedAvg, FedProx, FedAdam, FedBN or Ditto: train the received model on local data, send it back.

    FedBN keeps the batch-norm layers it trained and sends the rest; Ditto also trains its personal
    model, pulled towards the received global model, and keeps it.
    """
    settings = run_settings(context)
    cd = load_data(settings, context, msg)
    model = global_model(settings, len(cd.class_names), msg, context)
    received = copy.deepcopy(model) if settings.method == "ditto" else None
    config = msg.content.config_records.get("config", ConfigRecord())
    mu = float(config.get("proximal-mu", 0.0))
    server_round = int(config.get("server-round", 0))
    schedule = client_schedule(settings, cd.partition_id, settings.train.local_epochs, seeds.ROUND + server_round)
    loss = train_supervised(model, cd.train, schedule, proximal_mu=mu)
    metrics = MetricRecord({"num-examples": len(cd.train), "train-loss": loss})
    arrays = model_to_record(model.cpu())
    if settings.method == "fedbn":
        keep_local_norm(model, context.state)
        arrays = without_batch_norm(model)
    if received is not None:
        train_ditto_model(settings, cd, received, context, server_round)
    return Message(RecordDict({"arrays": arrays, "metrics": metrics}), reply_to=msg)


def train_ditto_model(settings: Settings, cd: ClientData, received: torch.nn.Module, context: Context, server_round: int) -> None:
    """Ditto: this client's personal model trained on its data with (lambda / 2) ||v - w||^2 towards the received
    global model w, and kept in the node state."""
    model = build_classifier(settings.model.name, len(cd.class_names), settings.data.image_size)
    model = personal_model(model, received, context.state)
    schedule = client_schedule(settings, cd.partition_id, settings.train.local_epochs, seeds.PERSONAL_ROUND + server_round)
    anchor = [parameter.detach() for parameter in received.to(schedule.device).parameters()]
    train_supervised(model, cd.train, schedule, proximal_mu=settings.train.ditto_lambda, anchor=anchor)
    keep_personal_model(model, context.state)


def handle_local(msg: Message, context: Context, load_data: DataSource = client_data) -> Message:
    """The `local` baseline: train the received initial model on local data alone; reply with it and its accuracy."""
    settings = run_settings(context)
    cd = load_data(settings, context, msg)
    model = global_model(settings, len(cd.class_names), msg, context)
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


def handle_dsd(msg: Message, context: Context, load_data: DataSource = client_data) -> Message:
    """Personalize the received global model by DSD (mode from the message's config); reply with both accuracies.

    FedBN and Ditto trained their personal models during the rounds: the client takes that model
    (FedBN: the global model with its own batch-norm layers; Ditto: its kept personal model).
    """
    settings = run_settings(context)
    cd = load_data(settings, context, msg)
    teacher = global_model(settings, len(cd.class_names), msg, context)
    global_acc = evaluate_accuracy(teacher, cd.test, pick_device())
    kept: dict[str, int] = {}
    if settings.method in PERSONAL_IN_ROUNDS:
        student = teacher if settings.method == "fedbn" else personal_model(copy.deepcopy(teacher), teacher, context.state)
    else:
        config = msg.content.config_records.get("config", ConfigRecord())
        dsd = replace(settings.dsd, mode=str(config["dsd-mode"])) if "dsd-mode" in config else settings.dsd
        student, kept = personalized_model(teacher, cd, dsd, settings, msg)
    metrics = MetricRecord(
        {"num-examples": len(cd.train), "global-acc": global_acc, **kept, **personalized_metrics(student, cd, settings, context)}
    )
    return Message(RecordDict({"metrics": metrics}), reply_to=msg)


def personalized_model(
    teacher: torch.nn.Module, cd: ClientData, dsd: DsdSettings, settings: Settings, msg: Message
) -> tuple[torch.nn.Module, dict[str, int]]:
    """`teacher` (the global model) personalized by DSD on the client's data, and what the validation share chose.

    A trial on the client's training images less a validation share (`dsd.validation-fraction`) picks how many
    epochs the personalization then trains on all of them (`kept-epoch`; 0: no epoch beat the global model on the
    validation share, and the global model is kept). Without a validation share it trains `dsd.epochs`.
    """
    schedule = client_schedule(settings, cd.partition_id, dsd.epochs, seeds.DSD)
    label = f"partition {cd.partition_id}"
    own, validation = hold_out(cd.train, dsd.validation_fraction, client_seed(settings.seed, cd.partition_id, seeds.VALIDATION))
    if len(validation) == 0:
        return train_personalized(teacher, with_synthetic_share(cd.train, msg), dsd, schedule, progress_label=label), {}
    best = BestEpoch(teacher, validation, pick_device())
    train_personalized(teacher, with_synthetic_share(own, msg), dsd, schedule, progress_label=f"{label} trial",
                       on_epoch_end=best.observe)
    kept = {"kept-epoch": best.kept_epoch, "validation-images": len(validation)}
    if best.kept_epoch == 0:
        return teacher, kept
    student = train_personalized(teacher, with_synthetic_share(cd.train, msg), dsd, schedule, progress_label=label,
                                 stop_after=best.kept_epoch)
    return student, kept


def with_synthetic_share(train: ImageSplit, msg: Message) -> ImageSplit:
    """The client's training split and, when the server sent it (dsd.synthetic-share), its share of the synthetic pool."""
    if SYNTHETIC_SHARE_KEY not in msg.content.array_records:
        return train
    share = record_to_split(msg.content.array_records[SYNTHETIC_SHARE_KEY])
    return concatenated([train, ImageSplit(pixels_as(share.float_images(), train.images.dtype), share.labels)])


def handle_personalized(msg: Message, context: Context) -> Message:
    """This node's last personalized model (from its state), for evaluating it on other clients' test splits."""
    if PERSONALIZED_MODEL not in context.state:
        raise RuntimeError(f"partition {partition_id(context)}: no personalized model in this node's state yet")
    return Message(RecordDict({"arrays": context.state[PERSONALIZED_MODEL]}), reply_to=msg)


def handle_evaluate(msg: Message, context: Context) -> Message:
    """Accuracy of the received global model on this client's test split."""
    settings = run_settings(context)
    cd = client_data(settings, context, msg)
    model = global_model(settings, len(cd.class_names), msg, context)
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
