"""Baselines on the same clients, partitions, models and seeds: fedavg, fedprox, fedavg-ft, fedbn, ditto, local,
centralized."""

from __future__ import annotations

import statistics

import torch
from flwr.app import ArrayRecord, RecordDict

from warmfed_flwr import data
from warmfed_flwr.config import Settings
from warmfed_flwr.data.types import ImageSplit
from warmfed_flwr.learning.models import initial_classifier
from warmfed_flwr.learning.training import classifier_schedule, evaluate_accuracy, pick_device, train_supervised
from warmfed_flwr.phases.personalize import personalize
from warmfed_flwr.phases.resilience import clients_evaluating
from warmfed_flwr.phases.rounds import StrategyRun, make_aggregation, run_rounds
from warmfed_flwr.run.context import RunContext
from warmfed_flwr.run.snapshots import SnapshotTaker
from warmfed_flwr.run.transport import model_to_record


def initial_arrays(settings: Settings, num_classes: int) -> ArrayRecord:
    """The shared, seeded classifier initialisation every method starts from."""
    return model_to_record(initial_classifier(settings, num_classes))


# The personalization that follows the rounds, by method, and the name of its phase.
PERSONALIZATION_PHASES = {"fedavg-ft": "finetune", "fedbn": "personal", "ditto": "personal"}


def run_federated(run: RunContext, plan: StrategyRun | None = None) -> None:
    """fedavg / fedprox / fedbn / ditto for R rounds (of `plan`'s strategy when given); then fedavg-ft fine-tunes
    the final global model on each client, and fedbn and ditto evaluate the personal models they kept.

    With `snapshot-rounds`, the results of shorter runs are recorded on the way (warmfed_flwr/run/snapshots.py).
    """
    settings = run.settings

    def personalization(arrays: ArrayRecord, phase: str) -> None:
        # fedavg-ft: plain fine-tuning (DSD mode "none"); fedbn, ditto: the client reports the personal
        # model it kept through the rounds and trains nothing, so the mode is not used
        personalize(run, arrays, dsd_mode="none", phase=phase)

    personalizes = settings.method in PERSONALIZATION_PHASES
    snapshots = SnapshotTaker(run.recorder, settings.snapshot_rounds, personalization if personalizes else None)
    plan = plan or StrategyRun(make_aggregation(settings, len(run.clients)))
    arrays = run_rounds(run, plan, initial_arrays(settings, run.num_classes), after_round=snapshots)
    if personalizes:
        phase = PERSONALIZATION_PHASES[settings.method]
        run.checkpoint.once(phase, run.recorder, lambda: personalization(arrays, phase))


def run_local(run: RunContext) -> None:
    """Each client trains alone; its model's mean accuracy over every client's test split is its global accuracy,
    over up to `evaluate-others` other clients' its `personal_acc_others`."""
    init = initial_arrays(run.settings, run.num_classes)
    with run.recorder.phase("local"):
        replies = run.send("local", "train.local", {c.node_id: RecordDict({"arrays": init}) for c in run.clients})
    models: dict[str, ArrayRecord] = {}
    for node_id, content in replies.items():
        client = run.recorder.client_of_node(node_id)
        if client is not None:
            client.personal_acc = float(content["metrics"]["personal-acc"])
            if "personal-acc-balanced" in content["metrics"]:
                client.personal_acc_balanced = float(content["metrics"]["personal-acc-balanced"])
            models[f"model-{client.partition_id}"] = content["arrays"]
    with run.recorder.phase("cross-evaluate"):
        evaluations = run.send("cross-evaluate", "evaluate.cross", {c.node_id: RecordDict(models) for c in run.clients})
    evaluated_by = {node_id: run.recorder.client_of_node(node_id) for node_id in evaluations}
    by_partition = {client.partition_id: evaluations[node] for node, client in evaluated_by.items() if client is not None}
    evaluators = clients_evaluating(sorted(by_partition), run.settings.evaluate_others)
    for name in models:
        owner = int(name.removeprefix("model-"))
        scores = {pid: float(content["metrics"][name]) for pid, content in by_partition.items()}
        run.recorder.clients[owner].global_acc = sum(scores.values()) / len(scores)
        others = [scores[pid] for pid in evaluators.get(owner, [])]
        if others:
            run.recorder.clients[owner].personal_acc_others = statistics.fmean(others)


def run_centralized(run: RunContext) -> None:
    """Reference, not FL: one model trained on every client's real train data pooled on the server."""
    settings, device = run.settings, pick_device()
    client_data = {
        c.partition_id: data.load_client_data(settings.data, c.partition_id, c.num_partitions) for c in run.clients
    }
    pooled = ImageSplit(
        torch.cat([cd.train.images for cd in client_data.values()]),
        torch.cat([cd.train.labels for cd in client_data.values()]),
    )
    model = initial_classifier(settings, run.num_classes)
    with run.recorder.phase("centralized"):
        schedule = classifier_schedule(settings.train, settings.train.local_only_epochs, settings.seed)
        train_supervised(model, pooled, schedule)
    for pid, cd in client_data.items():
        run.recorder.clients[pid].global_acc = evaluate_accuracy(model, cd.test, device)
