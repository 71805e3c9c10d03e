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
    bytes_up: int = 0
    bytes_down: int = 0
    details: dict[str, Any] = field(default_factory=dict)


def _mean(values: list[float]) -> float | None:
    return statistics.fmean(values) if values else None


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
        self.snapshot_seconds = 0.0  # spent taking snapshots (warmfed_flwr/run/snapshots.py), not on the run itself
        self._node_to_partition: dict[int, int] = {}
        self._started = time.perf_counter()
        out_dir.mkdir(parents=True, exist_ok=True)

    def add_client(self, partition_id: int, domain: str, node_id: int, num_test: int = 0) -> ClientResult:
        """Register a client found at discovery."""
        result = ClientResult(partition_id=partition_id, domain=domain, node_id=node_id, num_test=num_test)
        self.clients[partition_id] = result
        self._node_to_partition[node_id] = partition_id
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

    def client_numbers(self) -> dict[int, tuple[float | None, float | None, int, int]]:
        """Every client's accuracies and bytes so far, to be put back by `restore_client_numbers`."""
        return {pid: (c.global_acc, c.personal_acc, c.bytes_up, c.bytes_down) for pid, c in self.clients.items()}

    def restore_client_numbers(self, numbers: Mapping[int, tuple[float | None, float | None, int, int]]) -> None:
        """Put back what `client_numbers` returned."""
        for pid, (global_acc, personal_acc, bytes_up, bytes_down) in numbers.items():
            client = self.clients[pid]
            client.global_acc, client.personal_acc, client.bytes_up, client.bytes_down = (
                global_acc, personal_acc, bytes_up, bytes_down
            )

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
                    {"partition_id": c.partition_id, "num_test": c.num_test, "global_acc": c.global_acc,
                     "personal_acc": c.personal_acc, "bytes_up": c.bytes_up, "bytes_down": c.bytes_down}
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
                client.global_acc, client.personal_acc = saved["global_acc"], saved["personal_acc"]
                client.bytes_up, client.bytes_down = saved["bytes_up"], saved["bytes_down"]
                client.details = dict(saved["details"])
        self.phases += [{**p, "resumed": True} for p in results["phases"] if p["name"] != "discover"]
        self.round_history = list(results["round_history"])
        self.failures += [f for f in results["failures"] if f["phase"] != "discover"]
        self.retries += [r for r in results.get("retries", []) if r["phase"] != "discover"]  # older runs: none
        self.snapshots = list(results.get("snapshots", []))  # checkpoints older than snapshots have none
        self.strategy_metrics = {kind: dict(rounds) for kind, rounds in results.get("strategy_metrics", {}).items()}
        self.write()

    def averages(self) -> dict[str, float | None]:
        """Means over clients, and the worst client's personalized accuracy."""
        g = [c.global_acc for c in self.clients.values() if c.global_acc is not None]
        p = [c.personal_acc for c in self.clients.values() if c.personal_acc is not None]
        return {
            "global_acc": _mean(g),
            "personal_acc": _mean(p),
            "personal_acc_min": min(p) if p else None,
            "bytes_up": sum(c.bytes_up for c in self.clients.values()),
            "bytes_down": sum(c.bytes_down for c in self.clients.values()),
        }

    def domain_averages(self) -> dict[str, dict[str, float | None]]:
        """Mean global and personalized accuracy per domain."""
        out: dict[str, dict[str, float | None]] = {}
        for domain in sorted({c.domain for c in self.clients.values()}):
            members = [c for c in self.clients.values() if c.domain == domain]
            out[domain] = {
                "global_acc": _mean([c.global_acc for c in members if c.global_acc is not None]),
                "personal_acc": _mean([c.personal_acc for c in members if c.personal_acc is not None]),
            }
        return out

    def to_dict(self) -> dict[str, Any]:
        """The results.json document."""
        return {
            "method": self.method,
            "rounds": self.rounds,
            "seed": self.seed,
            "dataset": self.dataset,
            "class_names": list(self.class_names),
            "clients": [asdict(c) for c in sorted(self.clients.values(), key=lambda c: c.partition_id)],
            "averages": self.averages(),
            "domains": self.domain_averages(),
            "phases": self.phases,
            "round_history": self.round_history,
            "strategy_metrics": self.strategy_metrics,
            "failures": self.failures,
            "retries": self.retries,
            "snapshots": self.snapshots,
            "seconds_total": round(sum(p["seconds"] for p in self.phases), 3),
            "cached_seconds": self.cached_seconds(),
            "seconds_elapsed": round(time.perf_counter() - self._started, 3),
            "snapshot_seconds": round(self.snapshot_seconds, 3),
        }

    def write(self) -> None:
        """Write results.json (atomically) and summary.md."""
        write_json_atomic(self.out_dir / "results.json", self.to_dict())
        (self.out_dir / "summary.md").write_text(self.summary_markdown())

    def summary_markdown(self) -> str:
        """A markdown table per client plus averages, phases and failures."""

        def fmt(v: float | None) -> str:
            return "-" if v is None else f"{v:.3f}"

        lines = [
            f"# {self.method} (rounds={self.rounds}, seed={self.seed}, data={self.dataset})",
            "",
            "| client | domain | global acc | personalized acc | bytes up | bytes down |",
            "|---|---|---|---|---|---|",
        ]
        for c in sorted(self.clients.values(), key=lambda c: c.partition_id):
            lines.append(
                f"| {c.partition_id} | {c.domain} | {fmt(c.global_acc)} | {fmt(c.personal_acc)} "
                f"| {c.bytes_up:,} | {c.bytes_down:,} |"
            )
        avg = self.averages()
        lines.append(
            f"| **mean** | | **{fmt(avg['global_acc'])}** | **{fmt(avg['personal_acc'])}** "
            f"| {avg['bytes_up']:,} | {avg['bytes_down']:,} |"
        )
        lines += ["", "| phase | seconds |", "|---|---|"]
        lines += [
            f"| {p['name']}{' (cached)' if p.get('cached') else ''}{' (resumed)' if p.get('resumed') else ''} "
            f"| {p['seconds']:.1f} |"
            for p in self.phases
        ]
        if self.failures:
            lines += ["", "Failures:"]
            lines += [f"- {f['phase']}: client {f['partition_id']} (node {f['node_id']}): {f['reason']}" for f in self.failures]
        return "\n".join(lines) + "\n"
