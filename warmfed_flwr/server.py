"""The ServerApp: read the settings, find the clients, run the chosen method, write the results."""

from __future__ import annotations

import json
from datetime import datetime
from logging import INFO
from pathlib import Path
from typing import Any, Mapping

from flwr.app import Context
from flwr.common.logger import log
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import Strategy

from warmfed_flwr import data
from warmfed_flwr.baselines import run_centralized, run_federated, run_local
from warmfed_flwr.checkpoint import Checkpoint, check_resumable
from warmfed_flwr.config import NODE_LOCAL, ConfigError, Settings, merge_run_config
from warmfed_flwr.federation import (
    ClientInfo,
    FederationMismatchError,
    MeteredGrid,
    discover_clients,
    with_agreed_classes,
)
from warmfed_flwr.plots import save_accuracy_plot
from warmfed_flwr.results import RunRecorder, write_json_atomic
from warmfed_flwr.strategy import WarmFedStrategy


def resolve_output_dir(output_dir: str, resume: str = "") -> Path:
    """The absolute run directory: `output-dir` as given, else the resumed directory, else outputs/<date>-<time>."""
    if output_dir or resume:
        return Path(output_dir or resume).expanduser().resolve()
    return (Path.cwd() / "outputs" / datetime.now().strftime("%Y-%m-%d-%H%M%S")).resolve()


def open_checkpoint(out_dir: Path, settings: Settings, flat: Mapping[str, Any]) -> Checkpoint:
    """This run's checkpoint: a fresh one, or with `resume` set, the resumed run's (after checking its settings)."""
    if not settings.resume:
        return Checkpoint(out_dir)
    source = Path(settings.resume).expanduser().resolve()
    check_resumable(source, flat)
    checkpoint = Checkpoint.resume(out_dir, source)
    log(INFO, "resuming %s: finished phases %s", source, [entry["phase"] for entry in checkpoint.finished])
    return checkpoint


def remove_adapters(checkpoint: Checkpoint, settings: Settings) -> None:
    """A completed run deletes the adapters it received from its run directory, unless `keep-adapters` is set."""
    if settings.keep_adapters:
        return
    deleted = checkpoint.delete_adapters()
    if deleted:
        log(INFO, "deleted %d received adapters from the run directory (keep-adapters=false)", deleted)


def run_experiment(
    grid: Grid, run_config: Mapping[str, Any], round_strategy: Strategy | None = None
) -> dict[str, Any]:
    """Run one experiment end to end on `grid`; returns the results.json document.

    `round_strategy` replaces the aggregation of WarmFed's/FGL's optional rounds (default: the
    Flower strategy named by `train.aggregation`).
    """
    flat = merge_run_config(run_config)
    settings = Settings.from_run_config(flat)
    out_dir = resolve_output_dir(settings.output_dir, settings.resume)
    checkpoint = open_checkpoint(out_dir, settings, flat)  # first: the run directory may be the one resumed
    recorder = RunRecorder(out_dir, settings.method, settings.rounds, settings.seed, settings.data.name)
    write_json_atomic(out_dir / "run_config.json", flat)
    log(INFO, "warmfed-flwr: method=%s rounds=%d seed=%d -> %s", settings.method, settings.rounds, settings.seed, out_dir)
    node_local = settings.data.name == NODE_LOCAL
    if node_local and settings.method == "centralized":
        raise ConfigError("method=centralized pools the clients' images on the server: it cannot run on node-local data")
    metered = MeteredGrid(grid, recorder)
    try:
        with recorder.phase("discover"):
            expected = None if node_local else data.num_clients(settings.data)
            clients = discover_clients(metered, recorder, expected, flat, settings.timeout, settings.min_clients)
        if checkpoint.results is not None:
            recorder.take_over(checkpoint.results)
        class_names = agreed_class_names(clients, node_local)
        recorder.class_names = class_names
        num_classes = len(class_names)
        to_clients = with_agreed_classes(flat, class_names) if node_local else flat
        if settings.method in ("warmfed", "fgl"):
            WarmFedStrategy(
                settings, to_clients, recorder, class_names, round_strategy, use_adapters=settings.method == "warmfed",
                checkpoint=checkpoint,
            ).run(metered, clients)
        elif settings.method in ("fedavg", "fedprox", "fedavg-ft"):
            run_federated(metered, recorder, clients, settings, to_clients, num_classes, checkpoint)
        elif settings.method == "local":
            run_local(metered, recorder, clients, settings, to_clients, num_classes)
        else:
            run_centralized(recorder, clients, settings, num_classes)
    finally:
        recorder.write()
    remove_adapters(checkpoint, settings)
    save_accuracy_plot(
        out_dir / "accuracy.png", list(recorder.clients.values()), f"{settings.method}, rounds={settings.rounds}"
    )
    summary = recorder.summary_markdown()
    print(summary, flush=True)
    return recorder.to_dict()


def agreed_class_names(clients: list[ClientInfo], node_local: bool = False) -> tuple[str, ...]:
    """The federation's class list: what every client of a shared data set reported (they must agree), or for
    node-local data, where each node has its own classes, the sorted union of theirs."""
    names = {tuple(c.class_names) for c in clients}
    if node_local:
        return tuple(sorted({name for client in clients for name in client.class_names}))
    if len(names) != 1:
        raise FederationMismatchError(f"clients disagree on the class names: {sorted(names)}")
    return names.pop()


def make_server_app(overrides: Mapping[str, Any] | None = None) -> ServerApp:
    """A ServerApp running `run_experiment` with the run-config, overlaid with `overrides` (tests, scripts)."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        run_experiment(grid, {**dict(context.run_config), **dict(overrides or {})})

    return app
