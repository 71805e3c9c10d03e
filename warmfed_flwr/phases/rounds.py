"""Federated rounds through any `flwr.serverapp.strategy.Strategy`, run as written and recorded per client.

The strategy's own `start` drives the rounds, with its `train_config`, `evaluate_config` and
`evaluate_fn` and whatever it overrides, and returns its `Result` (kept in results.json). The app
watches the rounds through the Grid it hands to `start` (`RoundsGrid`): it numbers the rounds (a
resumed run continues the numbering, and so the clients' seeds), records each client's failures and per-round accuracy, enforces `min-clients`, passes the
training replies on in partition order, can fine-tune each round's aggregated model on the server
(WarmFed/FGL: on the synthetic pool) before any client sees it, and hands each round's global model
to a callback (the run's checkpoint, snapshots).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping

from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAdam, FedAvg, FedMedian, FedProx, FedTrimmedAvg, Result, Strategy

from warmfed_flwr.config import Settings
from warmfed_flwr.logs import logger
from warmfed_flwr.run.context import RunContext
from warmfed_flwr.run.federation import TooFewClientsError, keep_good_replies
from warmfed_flwr.run.grid import DelegatingGrid
from warmfed_flwr.run.results import RunRecorder

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
    if aggregation == "fedmedian":
        return FedMedian(**common)
    if aggregation == "fedtrimmedavg":
        return FedTrimmedAvg(beta=settings.train.trim_fraction, **common)
    return FedAvg(**common)


@dataclass(frozen=True)
class StrategyRun:
    """A Flower strategy and what its `start` takes besides the model and the number of rounds."""

    strategy: Strategy
    train_config: ConfigRecord | None = None
    evaluate_config: ConfigRecord | None = None
    evaluate_fn: Callable[[int, ArrayRecord], MetricRecord | None] | None = None


class RoundsGrid(DelegatingGrid):
    """The Grid a strategy's `start` runs its rounds on: records each round as its messages pass.

    Only `send_and_receive` is watched (Flower's strategies use it); the other calls pass through.
    A `train` batch opens a round, its `evaluate` batch closes it (or the next `train` batch, or
    `finish`, for a strategy that does not evaluate). Rounds are numbered from `first_round`.
    """

    def __init__(
        self,
        grid: Grid,
        recorder: RunRecorder,
        settings: Settings,
        server_update: ServerUpdate | None = None,
        first_round: int = 1,
        on_round_end: RoundEnd | None = None,
    ) -> None:
        super().__init__(grid)
        self.recorder = recorder
        self.min_clients = settings.min_clients
        self.timeout = settings.timeout
        self.server_update = server_update
        self.on_round_end = on_round_end
        self.first_round = first_round
        self.round = first_round - 1  # the round being run, in the run's numbering
        self._round_open = False
        self._global: ArrayRecord | None = None  # the global model the last batch carried
        self._fine_tuned: dict[int, tuple[ArrayRecord, ArrayRecord]] = {}  # id(aggregated) -> (aggregated, fine-tuned)

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        messages = list(messages)
        if not messages:  # e.g. a strategy that does not evaluate
            return list(self._grid.send_and_receive(messages, timeout=timeout))
        kind = messages[0].metadata.message_type.split(".")[0]
        if kind == MessageType.TRAIN:
            self._prepare(messages, fine_tune=self.round >= self.first_round)  # round 1's model is not aggregated
            if self._round_open:  # the previous round had no evaluation: it ends with the model this one starts from
                self._end_round()
            self.round += 1
            self._round_open = True
            self._set_round(messages)
        else:
            self._set_round(messages)
            self._prepare(messages, fine_tune=kind == MessageType.EVALUATE)
        replies = list(self._grid.send_and_receive(messages, timeout=timeout))
        good = keep_good_replies(self.recorder, f"rounds-{self.round}", messages, replies, self.timeout)
        if len(good) < self.min_clients:
            raise TooFewClientsError(
                f"rounds round {self.round}: only {len(good)} clients answered, fewer than min-clients={self.min_clients}; "
                f"failures: {self.recorder.failure_reasons(f'rounds-{self.round}')}"
            )
        if kind == MessageType.TRAIN:
            return self._in_partition_order(good)
        if kind == MessageType.EVALUATE:
            self._record_accuracies(good)
            self._end_round()
        return good

    def finish(self, result: Result) -> ArrayRecord | None:
        """The final global model (fine-tuned on the server when it is), once `start` has returned `result`."""
        if result.arrays is not None:
            self._global = self._global_model(result.arrays, fine_tune=self.round >= self.first_round)
        if self._round_open:
            self._end_round()
        return self._global

    def _set_round(self, messages: list[Message]) -> None:
        """Flower numbers the rounds of `start` from 1: the clients see the run's round number."""
        for content in _contents(messages):
            for record in content.config_records.values():
                if "server-round" in record:
                    record["server-round"] = self.round

    def _prepare(self, messages: list[Message], fine_tune: bool) -> None:
        """Put the global model (fine-tuned on the server after aggregation, when asked) into `messages`."""
        for content in _contents(messages):
            for key, arrays in list(content.array_records.items()):
                content[key] = self._global = self._global_model(arrays, fine_tune)

    def _global_model(self, arrays: ArrayRecord, fine_tune: bool) -> ArrayRecord:
        """`arrays`, or their server fine-tuned version (made once per aggregated model)."""
        if self.server_update is None:
            return arrays
        known = self._fine_tuned.get(id(arrays))
        if known is not None and known[0] is arrays:
            return known[1]
        if not fine_tune:
            return arrays
        self._fine_tuned = {id(arrays): (arrays, self.server_update(arrays))}
        return self._fine_tuned[id(arrays)][1]

    def _in_partition_order(self, replies: list[Message]) -> list[Message]:
        """`replies` sorted by the sending client's partition id (unknown nodes last, by node id).

        Aggregations sum the clients' weighted arrays in the order given; in arrival order the
        float32 sums differ in their last bits from run to run, and the rounds' trajectories with them.
        """

        def position(reply: Message) -> tuple[int, int]:
            client = self.recorder.client_of_node(reply.metadata.src_node_id)
            return (0, client.partition_id) if client is not None else (1, reply.metadata.src_node_id)

        return sorted(replies, key=position)

    def _record_accuracies(self, replies: list[Message]) -> None:
        accuracies: dict[int, float] = {}
        for reply in replies:
            client = self.recorder.client_of_node(reply.metadata.src_node_id)
            if client is not None and "metrics" in reply.content and "accuracy" in reply.content["metrics"]:
                client.global_acc = float(reply.content["metrics"]["accuracy"])
                accuracies[client.partition_id] = client.global_acc
        self.recorder.add_round("rounds", self.round, accuracies)
        logger.info("[rounds] round %d: mean global accuracy %.3f", self.round,
            sum(accuracies.values()) / max(len(accuracies), 1))
        self.recorder.write()

    def _end_round(self) -> None:
        self._round_open = False
        if self.on_round_end is not None and self._global is not None:
            self.on_round_end(self.round, self._global)


def _contents(messages: list[Message]) -> list[RecordDict]:
    """The distinct contents of `messages` (a strategy usually sends one RecordDict to every node)."""
    return list({id(msg.content): msg.content for msg in messages}.values())


def result_metrics(result: Result, first_round: int) -> dict[str, dict[str, dict[str, Any]]]:
    """The metrics of a strategy's `Result`, by the run's round numbers (0: the initial model, server side)."""

    def by_round(history: Mapping[int, MetricRecord], offset: int) -> dict[str, dict[str, Any]]:
        return {str(r + offset if r > 0 else 0): dict(metrics) for r, metrics in sorted(history.items())}

    offset = first_round - 1
    return {
        "train_metrics_clientapp": by_round(result.train_metrics_clientapp, offset),
        "evaluate_metrics_clientapp": by_round(result.evaluate_metrics_clientapp, offset),
        "evaluate_metrics_serverapp": by_round(result.evaluate_metrics_serverapp, offset),
    }


def run_rounds(
    run: RunContext,
    plan: StrategyRun,
    initial: ArrayRecord,
    server_update: ServerUpdate | None = None,
    after_round: RoundEnd | None = None,
) -> ArrayRecord:
    """Phase `rounds`: `settings.rounds` rounds of the plan's strategy from `initial`, through the strategy's
    own `start`; returns the final global arrays.

    `after_round` gets each round's global model once it is evaluated (e.g. a SnapshotTaker), before
    the round is checkpointed: a run stopped inside it repeats the round.
    The global model is checkpointed after every round (replacing the previous round's). A run
    resumes a stateless aggregation (FedAvg, FedProx) after its last stored round; any other
    strategy restarts its rounds from `initial`, because its server-side state (e.g. FedAdam's
    moments) is not stored.
    """
    checkpoint, recorder, settings = run.checkpoint, run.recorder, run.settings
    if (done := checkpoint.entry("rounds")) is not None:
        return checkpoint.model(done["model"]) if done["model"] else initial
    resumable = type(plan.strategy) in STATELESS_AGGREGATIONS
    last = checkpoint.entry("round") if resumable else None
    first, arrays = (last["round"] + 1, checkpoint.model(last["model"])) if last else (1, initial)

    def end_round(server_round: int, round_arrays: ArrayRecord) -> None:
        if after_round is not None:
            after_round(server_round, round_arrays)
        name = checkpoint.save_model(f"round-{server_round}", round_arrays)
        if resumable:
            checkpoint.mark("round", recorder, round=server_round, model=name)
        checkpoint.drop_model(f"round-{server_round - 1}")

    rounds_grid = RoundsGrid(run.grid, recorder, settings, server_update, first, end_round)
    with recorder.phase("rounds"):
        result = plan.strategy.start(
            grid=rounds_grid, initial_arrays=arrays, num_rounds=settings.rounds - first + 1, timeout=settings.timeout,
            train_config=plan.train_config, evaluate_config=plan.evaluate_config, evaluate_fn=plan.evaluate_fn,
        )
        final = rounds_grid.finish(result)
        recorder.add_strategy_metrics(result_metrics(result, first))
    checkpoint.mark("rounds", recorder, model=f"round-{settings.rounds}" if settings.rounds else None)
    return final if final is not None else arrays
