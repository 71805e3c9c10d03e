"""What a run leaves behind: results.json (written after every phase), summary.md and run_config.json."""

from __future__ import annotations

import json
import os
import statistics
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Mapping

from warmfed_flwr.run.summary import summary_markdown
from warmfed_flwr.runtime.environment import run_environment

if TYPE_CHECKING:
    from warmfed_flwr.run.tracking import Tracker


@dataclass
class ClientResult:
    """One client's numbers; accuracies stay None where the method has no such model."""

    partition_id: int
    domain: str
    node_id: int
    num_test: int = 0  # the client's test images, which its accuracies are shares of
    global_acc: float | None = None
    personal_acc: float | None = None
    personal_acc_others: float | None = None  # the personalized model on other clients' test splits
    personal_acc_balanced: float | None = None  # ... on a label-balanced test split of its own domain
    bytes_up: int = 0
    bytes_down: int = 0
    details: dict[str, Any] = field(default_factory=dict)


# a client's numbers that a snapshot records and a resumed run takes over
CLIENT_NUMBERS = ("global_acc", "personal_acc", "personal_acc_others", "personal_acc_balanced", "bytes_up", "bytes_down")


def _mean(values: list[float]) -> float | None:
    return statistics.fmean(values) if values else None


def _accuracy_means(clients: list[ClientResult]) -> dict[str, float | None]:
    """The mean of each accuracy over the clients that have it."""
    names = ("global_acc", "personal_acc", "personal_acc_others", "personal_acc_balanced")
    return {name: _mean([getattr(c, name) for c in clients if getattr(c, name) is not None]) for name in names}


def nodes_used(clients: list[ClientResult]) -> list[dict[str, Any]]:
    """Where the run's work was done: per Ray node (or host, outside Ray) the clients it served and its processes."""
    nodes: dict[str, dict[str, Any]] = {}
    for client in clients:
        for places in client.details.get("ran_on", {}).values():
            for place in places:
                key = str(place.get("node_id", place["host"]))
                node = nodes.setdefault(key, {
                    "node_id": place.get("node_id"), "node_address": place.get("node_address"), "host": place["host"],
                    "partitions": set(), "pids": set(),
                })
                node["partitions"].add(client.partition_id)
                node["pids"].add(place["pid"])
    return [
        {**node, "clients": len(node["partitions"]), "partitions": sorted(node["partitions"]),
         "pids": sorted(node["pids"])}
        for node in nodes.values()
    ]


def write_json_atomic(path: Path, payload: Any) -> None:
    """Write JSON through a temporary file and an atomic rename, so a reader never sees half a file."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=False))
    os.replace(tmp, path)


class RunRecorder:
    """Collects per-client results, phase timings, rounds and failures, and writes them out."""

    def __init__(self, out_dir: Path, method: str, rounds: int, seed: int, dataset: str) -> None:
        self.out_dir = out_dir
        self.method = method
        self.rounds = rounds
        self.seed = seed
        self.dataset = dataset
        self.class_names: tuple[str, ...] = ()  # the federation's classes, agreed at discovery
        self.clients: dict[int, ClientResult] = {}
        self.phases: list[dict[str, Any]] = []
        self.round_history: list[dict[str, Any]] = []
        self.failures: list[dict[str, Any]] = []
        self.retries: list[dict[str, Any]] = []
        self.current_phase = ""  # the phase being timed by `phase()`, for records made on the way
        self.tracker: Tracker | None = None  # TensorBoard / MLflow, when the run's `tracking` asks for one
        self.snapshots: list[dict[str, Any]] = []
        # what the rounds' strategy returned in its Result, by round: {"train_metrics_clientapp": {"1": {...}}, ...}
        self.strategy_metrics: dict[str, dict[str, dict[str, Any]]] = {}
        self.error: str | None = None  # why the run stopped, when it failed
        self.snapshot_seconds = 0.0  # spent taking snapshots (warmfed_flwr/run/snapshots.py), not on the run itself
        self._node_to_partition: dict[int, int] = {}
        # placements seen before discovery named their client, by node id
        self._unplaced: dict[int, list[tuple[str, dict[str, Any]]]] = {}
        self._started = time.perf_counter()
        out_dir.mkdir(parents=True, exist_ok=True)

    def add_client(self, partition_id: int, domain: str, node_id: int, num_test: int = 0) -> ClientResult:
        """Register a client found at discovery."""
        result = ClientResult(partition_id=partition_id, domain=domain, node_id=node_id, num_test=num_test)
        self.clients[partition_id] = result
        self._node_to_partition[node_id] = partition_id
        for phase, place in self._unplaced.pop(node_id, []):
            self.add_placement(node_id, place, phase)
        return result

    def client_of_node(self, node_id: int) -> ClientResult | None:
        """The client a SuperNode serves, if it was discovered."""
        pid = self._node_to_partition.get(node_id)
        return None if pid is None else self.clients[pid]

    def add_failure(self, phase: str, node_id: int, reason: str) -> None:
        """Record that a client failed in a phase; the run goes on without it."""
        client = self.client_of_node(node_id)
        self.failures.append(
            {
                "phase": phase,
                "partition_id": None if client is None else client.partition_id,
                "domain": None if client is None else client.domain,
                "node_id": node_id,
                "reason": reason,
            }
        )

    def add_retry(self, node_id: int, message_type: str, attempt: int, reason: str) -> None:
        """Record that a client's message is sent again after an infrastructure fault (in the current phase)."""
        client = self.client_of_node(node_id)
        self.retries.append(
            {
                "phase": self.current_phase,
                "message_type": message_type,
                "partition_id": None if client is None else client.partition_id,
                "node_id": node_id,
                "attempt": attempt,
                "reason": reason,
            }
        )

    def add_placement(self, node_id: int, place: dict[str, Any], phase: str | None = None) -> None:
        """Record where a client's reply in `phase` (default: the current one) was made: details["ran_on"][phase]
        lists each distinct place (Ray node id and address, host, process)."""
        phase = phase or self.current_phase
        client = self.client_of_node(node_id)
        if client is None:
            self._unplaced.setdefault(node_id, []).append((phase, place))
            return
        places = client.details.setdefault("ran_on", {}).setdefault(phase, [])
        if place not in places:
            places.append(place)

    def failure_reasons(self, phase: str, limit: int = 2) -> str:
        """The first `limit` distinct reasons why clients failed in `phase`, for an error message."""
        reasons = list(dict.fromkeys(f["reason"][:400] for f in self.failures if f["phase"] == phase))
        more = f" (and {len(reasons) - limit} more)" if len(reasons) > limit else ""
        return " | ".join(reasons[:limit]) + more

    def clear_failures(self, phase: str, node_ids: set[int]) -> None:
        """Forget the failures of these nodes in `phase`: they answered a later attempt."""
        self.failures = [f for f in self.failures if not (f["phase"] == phase and f["node_id"] in node_ids)]

    def add_strategy_metrics(self, metrics: Mapping[str, Mapping[str, dict[str, Any]]]) -> None:
        """Keep the metrics of the rounds' strategy's Result (by kind, then round), next to a resumed run's."""
        for kind, rounds in metrics.items():
            self.strategy_metrics.setdefault(kind, {}).update(rounds)
        self.write()

    def add_round(self, phase: str, server_round: int, accuracies: Mapping[int, float]) -> None:
        """Record the global model's accuracy per client (by partition id) after a round."""
        self.round_history.append(
            {
                "phase": phase,
                "round": server_round,
                "global_acc": {str(pid): acc for pid, acc in sorted(accuracies.items())},
                "average": _mean(list(accuracies.values())),
            }
        )
        if self.tracker is not None:
            self.tracker.round(phase, server_round, accuracies, self.round_history[-1]["average"])

    def client_numbers(self) -> dict[int, dict[str, Any]]:
        """Every client's accuracies and bytes so far (CLIENT_NUMBERS), to be put back by `restore_client_numbers`."""
        return {pid: {name: getattr(c, name) for name in CLIENT_NUMBERS} for pid, c in self.clients.items()}

    def restore_client_numbers(self, numbers: Mapping[int, Mapping[str, Any]]) -> None:
        """Put back what `client_numbers` returned."""
        for pid, values in numbers.items():
            for name, value in values.items():
                setattr(self.clients[pid], name, value)

    def cached_seconds(self) -> float:
        """The seconds the phases reused from the cache so far took when they were computed."""
        return round(sum(p["seconds"] for p in self.phases if p.get("cached")), 3)

    def has_snapshot(self, server_round: int) -> bool:
        """True when a snapshot of `server_round` is recorded (also by the run this one resumed)."""
        return any(s["round"] == server_round for s in self.snapshots)

    def add_snapshot(self, server_round: int, seconds_taking_it: float) -> None:
        """Record the clients' numbers now as the results of a run that stopped after `server_round`.

        Its `seconds` are this run's elapsed seconds without earlier snapshots, `cached_seconds` those of
        the phases reused from the cache so far; `seconds_taking_it` (its own personalization) is then
        counted as snapshot time, which later snapshots and the run's own total leave out.
        """
        self.snapshots.append(
            {
                "round": server_round,
                "clients": [
                    {"partition_id": c.partition_id, "num_test": c.num_test, **{name: getattr(c, name) for name in CLIENT_NUMBERS}}
                    for c in sorted(self.clients.values(), key=lambda c: c.partition_id)
                ],
                "averages": self.averages(),
                "domains": self.domain_averages(),
                "seconds": round(time.perf_counter() - self._started - self.snapshot_seconds, 3),
                "cached_seconds": self.cached_seconds(),
            }
        )
        self.snapshot_seconds += seconds_taking_it
        self.write()

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Time a phase and write results.json when it ends (also when it fails)."""
        start, outer = time.perf_counter(), self.current_phase
        self.current_phase = name
        try:
            yield
        finally:
            self.current_phase = outer
            self.phases.append({"name": name, "seconds": round(time.perf_counter() - start, 3)})
            if self.tracker is not None:
                self.tracker.phase(name, self.phases[-1]["seconds"])
            self.write()

    def add_cached_phase(self, name: str, seconds: float) -> None:
        """Record a phase whose artifacts were reused, with the seconds it took when it was computed."""
        self.phases.append({"name": name, "seconds": round(seconds, 3), "cached": True})
        if self.tracker is not None:
            self.tracker.phase(name, self.phases[-1]["seconds"])
        self.write()

    def take_over(self, results: Mapping[str, Any]) -> None:
        """Continue a resumed run: its per-client numbers, finished phases (marked `resumed`), rounds and failures.

        Its discovery is left out: discovery ran again, and the node ids are this run's.
        """
        for saved in results["clients"]:
            client = self.clients.get(saved["partition_id"])
            if client is not None:
                for name in CLIENT_NUMBERS:  # runs from before the resilience numbers have none
                    setattr(client, name, saved.get(name, 0 if name.startswith("bytes") else None))
                client.details = dict(saved["details"])
        self.phases += [{**p, "resumed": True} for p in results["phases"] if p["name"] != "discover"]
        self.round_history = list(results["round_history"])
        self.failures += [f for f in results["failures"] if f["phase"] != "discover"]
        self.retries += [r for r in results.get("retries", []) if r["phase"] != "discover"]  # older runs: none
        self.snapshots = list(results.get("snapshots", []))  # checkpoints older than snapshots have none
        self.strategy_metrics = {kind: dict(rounds) for kind, rounds in results.get("strategy_metrics", {}).items()}
        self.write()

    def averages(self) -> dict[str, float | None]:
        """Means over clients, the worst client's personalized accuracy, and how often personalization hurt.

        `personal_worse_than_global`: the share of clients whose personalized model is less accurate
        on their own test split than the global model it started from.
        """
        clients = list(self.clients.values())
        p = [c.personal_acc for c in clients if c.personal_acc is not None]
        both = [c for c in clients if c.personal_acc is not None and c.global_acc is not None]
        return {
            **_accuracy_means(clients),
            "personal_acc_min": min(p) if p else None,
            "personal_worse_than_global": _mean([float(c.personal_acc < c.global_acc) for c in both]),
            "bytes_up": sum(c.bytes_up for c in clients),
            "bytes_down": sum(c.bytes_down for c in clients),
        }

    def domain_averages(self) -> dict[str, dict[str, float | None]]:
        """Mean accuracies per domain."""
        domains = sorted({c.domain for c in self.clients.values()})
        return {domain: _accuracy_means([c for c in self.clients.values() if c.domain == domain]) for domain in domains}

    def to_dict(self) -> dict[str, Any]:
        """The results.json document."""
        return {
            "method": self.method,
            "rounds": self.rounds,
            "seed": self.seed,
            "dataset": self.dataset,
            "environment": run_environment(),  # the server's; where each client ran: clients[].details.ran_on
            "class_names": list(self.class_names),
            "clients": [asdict(c) for c in sorted(self.clients.values(), key=lambda c: c.partition_id)],
            "averages": self.averages(),
            "domains": self.domain_averages(),
            "phases": self.phases,
            "round_history": self.round_history,
            "strategy_metrics": self.strategy_metrics,
            "failures": self.failures,
            "retries": self.retries,
            "nodes": nodes_used(list(self.clients.values())),
            "snapshots": self.snapshots,
            "seconds_total": round(sum(p["seconds"] for p in self.phases), 3),
            "cached_seconds": self.cached_seconds(),
            "seconds_elapsed": round(time.perf_counter() - self._started, 3),
            "snapshot_seconds": round(self.snapshot_seconds, 3),
            **({"error": self.error} if self.error else {}),
        }

    def write(self) -> None:
        """Write results.json (atomically) and summary.md, from the same document."""
        results = self.to_dict()
        write_json_atomic(self.out_dir / "results.json", results)
        (self.out_dir / "summary.md").write_text(summary_markdown(results))
