"""Resilience of personalized models: their accuracy on other clients' test splits.

A personalized model that only fits its own test split is not resilient. After a personalization,
each client keeps its personalized model in its node state; the server fetches them
(`query.personalized`) and has every client evaluate the models of the clients before it in
partition order (`evaluate.cross`), up to `evaluate-others` models each. Both are evaluation
traffic, so the method's bytes do not change. Only clients whose personalization succeeded are
asked; a client failing here is recorded under phase `<phase>-others` and never stops the run.
"""

from __future__ import annotations

import statistics

from flwr.app import RecordDict

from warmfed_flwr.run.context import RunContext


def clients_evaluating(partition_ids: list[int], count: int) -> dict[int, list[int]]:
    """For each client, the next `count` clients in partition order (cyclically) that evaluate its model; never itself."""
    ordered = sorted(partition_ids)
    count = min(count, len(ordered) - 1)
    return {pid: [ordered[(index + step) % len(ordered)] for step in range(1, count + 1)] for index, pid in enumerate(ordered)}


def evaluate_on_others(run: RunContext, phase: str) -> None:
    """Record each personalized model's mean accuracy on up to `evaluate-others` other clients' test splits."""
    count = run.settings.evaluate_others
    personalized = [c for c in run.clients if run.recorder.clients[c.partition_id].personal_acc is not None]
    if count == 0 or len(personalized) < 2:
        return
    phase = f"{phase}-others"
    models = {}
    queries = {c.node_id: RecordDict() for c in personalized}
    for node_id, content in run.send(phase, "query.personalized", queries, min_clients=0).items():
        client = run.recorder.client_of_node(node_id)
        if client is not None:
            models[client.partition_id] = content["arrays"]
    evaluators = clients_evaluating(list(models), count)
    node_of = {c.partition_id: c.node_id for c in run.clients}
    to_evaluate: dict[int, RecordDict] = {}
    for owner, evaluating in evaluators.items():
        for evaluator in evaluating:
            to_evaluate.setdefault(node_of[evaluator], RecordDict())[f"model-{owner}"] = models[owner]
    scores: dict[int, list[float]] = {owner: [] for owner in models}
    for content in run.send(phase, "evaluate.cross", to_evaluate, min_clients=0).values():
        for name, accuracy in content["metrics"].items():
            scores[int(name.removeprefix("model-"))].append(float(accuracy))
    for owner, values in scores.items():
        if values:
            run.recorder.clients[owner].personal_acc_others = statistics.fmean(values)
