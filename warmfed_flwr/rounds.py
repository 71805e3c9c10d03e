"""Federated rounds through any `flwr.serverapp.strategy` aggregation, recorded per client.

`RecordingStrategy` wraps a user's or a built-in Flower strategy: it adds the run config to every
message, records each client's failures and per-round accuracy, enforces `min-clients`, can
fine-tune the aggregated model on the server (WarmFed/FGL: on the synthetic pool) after each round,
and hands each round's global model to a callback (the run's checkpoint).
"""

from __future__ import annotations

from logging import INFO
from typing import Callable, Iterable, Mapping

from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.common.logger import log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAdam, FedAvg, FedProx, Strategy

from warmfed_flwr.checkpoint import Checkpoint
from warmfed_flwr.config import Settings
from warmfed_flwr.federation import RUN_CONFIG_KEY, TooFewClientsError, keep_good_replies, run_config_record
from warmfed_flwr.results import RunRecorder

ServerUpdate = Callable[[ArrayRecord], ArrayRecord]
RoundEnd = Callable[[int, ArrayRecord], None]
# Aggregations without state between rounds: a run resumes them from the last round's global model.
STATELESS_AGGREGATIONS = (FedAvg, FedProx)


def make_aggregation(settings: Settings, num_clients: int) -> Strategy:
    """The Flower strategy named by `train.aggregation` (FedProx is also what method `fedprox` uses)."""
    common = dict(
        fraction_train=1.0,
        fraction_evaluate=1.0,
        min_train_nodes=settings.min_clients,
        min_evaluate_nodes=settings.min_clients,
        min_available_nodes=settings.min_clients,
    )
    aggregation = "fedprox" if settings.method == "fedprox" else settings.train.aggregation
    if aggregation == "fedprox":
        return FedProx(proximal_mu=settings.train.proximal_mu, **common)
    if aggregation == "fedadam":
        return FedAdam(eta=settings.train.server_lr, eta_l=settings.train.lr, **common)
    return FedAvg(**common)


class RecordingStrategy(Strategy):
    """Delegates aggregation to `inner`; records failures and accuracies; optionally updates on the server.

    Flower numbers the rounds of `start` from 1; they are recorded, and passed to `inner`, as rounds
    `first_round`, `first_round + 1`, ... (a resumed run continues the numbering, and so the clients' seeds).
    """

    def __init__(
        self,
        inner: Strategy,
        recorder: RunRecorder,
        run_config: Mapping[str, object],
        min_clients: int,
        timeout: float,
        phase: str = "rounds",
        server_update: ServerUpdate | None = None,
        first_round: int = 1,
        on_round_end: RoundEnd | None = None,
    ) -> None:
        self.inner = inner
        self.recorder = recorder
        self.run_config = dict(run_config)
        self.min_clients = min_clients
        self.timeout = timeout
        self.phase = phase
        self.server_update = server_update
        self.on_round_end = on_round_end
        self._offset = first_round - 1
        self._sent: list[Message] = []
        self._arrays: ArrayRecord | None = None  # the global model of the round being evaluated

    def summary(self) -> None:
        self.inner.summary()

    def _with_run_config(self, messages: Iterable[Message]) -> list[Message]:
        messages = list(messages)
        for msg in messages:
            msg.content[RUN_CONFIG_KEY] = run_config_record(self.run_config)
        self._sent = messages
        return messages

    def _record_failures(self, server_round: int, replies: list[Message]) -> list[Message]:
        good = keep_good_replies(self.recorder, f"{self.phase}-{server_round}", self._sent, replies, self.timeout)
        if len(good) < self.min_clients:
            raise TooFewClientsError(
                f"{self.phase} round {server_round}: only {len(good)} clients answered, "
                f"fewer than min-clients={self.min_clients}"
            )
        return good

    def _in_partition_order(self, replies: list[Message]) -> list[Message]:
        """`replies` sorted by the sending client's partition id (unknown nodes last, by node id).

        Aggregations sum the clients' weighted arrays in the order given; in arrival order the
        float32 sums differ in their last bits from run to run, and the rounds' trajectories with them.
        """

        def position(reply: Message) -> tuple[int, int]:
            client = self.recorder.client_of_node(reply.metadata.src_node_id)
            return (0, client.partition_id) if client is not None else (1, reply.metadata.src_node_id)

        return sorted(replies, key=position)

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid) -> Iterable[Message]:
        return self._with_run_config(self.inner.configure_train(server_round + self._offset, arrays, config, grid))

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        server_round += self._offset
        good = self._in_partition_order(self._record_failures(server_round, list(replies)))
        arrays, metrics = self.inner.aggregate_train(server_round, good)
        if arrays is not None and self.server_update is not None:
            arrays = self.server_update(arrays)
        return arrays, metrics

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        self._arrays = arrays
        return self._with_run_config(self.inner.configure_evaluate(server_round + self._offset, arrays, config, grid))

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        server_round += self._offset
        good = self._record_failures(server_round, list(replies))
        accuracies: dict[int, float] = {}
        for reply in good:
            client = self.recorder.client_of_node(reply.metadata.src_node_id)
            if client is not None:
                client.global_acc = float(reply.content["metrics"]["accuracy"])
                accuracies[client.partition_id] = client.global_acc
        self.recorder.add_round(self.phase, server_round, accuracies)
        log(INFO, "[%s] round %d: mean global accuracy %.3f", self.phase, server_round,
            sum(accuracies.values()) / max(len(accuracies), 1))
        self.recorder.write()
        metrics = self.inner.aggregate_evaluate(server_round, good)
        if self.on_round_end is not None and self._arrays is not None:
            self.on_round_end(server_round, self._arrays)
        return metrics


def run_rounds(
    grid: Grid,
    recorder: RunRecorder,
    strategy: Strategy,
    initial: ArrayRecord,
    settings: Settings,
    run_config: Mapping[str, object],
    server_update: ServerUpdate | None = None,
    checkpoint: Checkpoint | None = None,
    after_round: RoundEnd | None = None,
) -> ArrayRecord:
    """Phase `rounds`: `settings.rounds` rounds of `strategy` from `initial`; returns the final global arrays.

    `after_round` gets each round's global model once it is evaluated (e.g. a SnapshotTaker), before
    the round is checkpointed: a run stopped inside it repeats the round.
    With a checkpoint, the global model is stored after every round (replacing the previous round's).
    A run resumes a stateless aggregation (FedAvg, FedProx) after its last stored round; any other
    strategy restarts its rounds from `initial`, because its server-side state (e.g. FedAdam's
    moments) is not stored.
    """
    if checkpoint is not None and (done := checkpoint.entry("rounds")) is not None:
        return checkpoint.model(done["model"]) if done["model"] else initial
    resumable = type(strategy) in STATELESS_AGGREGATIONS
    last = checkpoint.entry("round") if checkpoint is not None and resumable else None
    first, arrays = (last["round"] + 1, checkpoint.model(last["model"])) if last else (1, initial)

    def end_round(server_round: int, round_arrays: ArrayRecord) -> None:
        if after_round is not None:
            after_round(server_round, round_arrays)
        if checkpoint is None:
            return
        name = checkpoint.save_model(f"round-{server_round}", round_arrays)
        if resumable:
            checkpoint.mark("round", recorder, round=server_round, model=name)
        checkpoint.drop_model(f"round-{server_round - 1}")

    recording = RecordingStrategy(
        strategy, recorder, run_config, settings.min_clients, settings.timeout, "rounds", server_update,
        first_round=first, on_round_end=end_round,
    )
    with recorder.phase("rounds"):
        result = recording.start(
            grid=grid, initial_arrays=arrays, num_rounds=settings.rounds - first + 1, timeout=settings.timeout
        )
    if checkpoint is not None:
        checkpoint.mark("rounds", recorder, model=f"round-{settings.rounds}" if settings.rounds else None)
    return result.arrays if result.arrays is not None else arrays
