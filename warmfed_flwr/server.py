"""The ServerApp: read the settings, find the clients, run the chosen method, write the results."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, MetricRecord
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import Strategy

from warmfed_flwr import data
from warmfed_flwr.config import NODE_LOCAL, ConfigError, Settings, merge_run_config
from warmfed_flwr.generative.export import export_adapter
from warmfed_flwr.logs import logger
from warmfed_flwr.phases.baselines import run_centralized, run_federated, run_local
from warmfed_flwr.phases.rounds import StrategyRun
from warmfed_flwr.phases.warmfed import WarmFedStrategy
from warmfed_flwr.run.checkpoint import Checkpoint, check_resumable
from warmfed_flwr.run.context import RunContext
from warmfed_flwr.run.federation import (
    AGREED_CLASSES_KEY,
    ClientInfo,
    FederationMismatchError,
    agreed_classes_record,
    discover_clients,
)
from warmfed_flwr.run.grid import MeteredGrid
from warmfed_flwr.run.plots import save_accuracy_plot
from warmfed_flwr.run.results import RunRecorder, write_json_atomic
from warmfed_flwr.run.summary import summary_markdown
from warmfed_flwr.run.tracking import open_tracker
from warmfed_flwr.runtime import link_state, ray_workers


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
    logger.info("resuming %s: finished phases %s", source, [entry["phase"] for entry in checkpoint.finished])
    return checkpoint


def finish_adapters(checkpoint: Checkpoint, settings: Settings, out_dir: Path) -> None:
    """A completed run deletes the adapters it received from its checkpoint; with `keep-adapters` it first
    exports each as `adapters/partition-<id>/` in the format its library opens (warmfed_flwr/generative/export.py)."""
    done = checkpoint.entry("lora")
    if settings.keep_adapters and done is not None:
        kept = [pid for pid in sorted(done["partitions"]) if checkpoint.store.has_adapters(done["key"], [pid])]
        for pid in kept:  # none left when a resumed run had already finished
            adapter, _ = checkpoint.store.load_adapter(done["key"], pid)
            export_adapter(settings.lora.backbone, adapter, out_dir / "adapters" / f"partition-{pid}")
        logger.info("kept %d received adapters in %s (keep-adapters=true)", len(kept), out_dir / "adapters")
    deleted = checkpoint.delete_adapters()
    if deleted and not settings.keep_adapters:
        logger.info("deleted %d received adapters from the run directory (keep-adapters=false)", deleted)


# Measured with scripts/gpu_phase_costs.py --lora-only (BENCHMARKS.md): one LoRA step of Stable Diffusion 1.5's
# size at 512 px, batch 4, takes 72 s on 2 CPU cores and 0.24 s on an H100.
NO_CUDA_WARNING = (
    "no CUDA device: the stable-diffusion backbone runs on the CPU, about 300x slower than on an H100 "
    "(one LoRA step at 512 px and batch 4: 72 s on 2 CPU cores against 0.24 s; a 1,000-step fit takes about "
    "20 hours per client instead of 4 minutes). Run it on a GPU machine, or try the tiny backbone on a CPU"
)


def warn_if_no_cuda(settings: Settings) -> None:
    """Say once, at the start, that a Stable Diffusion run will be slow without CUDA."""
    if settings.lora.backbone == "stable-diffusion" and not torch.cuda.is_available():
        logger.warning(NO_CUDA_WARNING)


def run_experiment(
    grid: Grid,
    run_config: Mapping[str, Any],
    round_strategy: Strategy | None = None,
    *,
    train_config: ConfigRecord | None = None,
    evaluate_config: ConfigRecord | None = None,
    evaluate_fn: Callable[[int, ArrayRecord], MetricRecord | None] | None = None,
) -> dict[str, Any]:
    """Run one experiment end to end on `grid`; returns the results.json document.

    `run_config` is the ServerApp's `context.run_config`: the clients read their settings from the
    same run config, which Flower gives every ClientApp, so settings changed here alone would not
    reach them. `round_strategy` runs the rounds (WarmFed's and FGL's optional rounds, and those of fedavg, fedprox
    and fedavg-ft) through its own `start`, which gets `train_config`, `evaluate_config` and
    `evaluate_fn` (default: the Flower strategy named by `train.aggregation`).
    """
    flat = merge_run_config(run_config)
    settings = Settings.from_run_config(flat)
    out_dir = resolve_output_dir(settings.output_dir, settings.resume)
    checkpoint = open_checkpoint(out_dir, settings, flat)  # first: the run directory may be the one resumed
    recorder = RunRecorder(out_dir, settings.method, settings.rounds, settings.seed, settings.data.name)
    write_json_atomic(out_dir / "run_config.json", flat)
    logger.info("warmfed-flwr: method=%s rounds=%d seed=%d -> %s", settings.method, settings.rounds, settings.seed, out_dir)
    warn_if_no_cuda(settings)
    node_local = settings.data.name == NODE_LOCAL
    if node_local and settings.method == "centralized":
        raise ConfigError("method=centralized pools the clients' images on the server: it cannot run on node-local data")
    plan = StrategyRun(round_strategy, train_config, evaluate_config, evaluate_fn) if round_strategy else None
    ray_workers.install()  # the simulation engine (same process): workers lost with their node are survived
    link_state.install()  # ... and its message store answers each simulated node without scanning every message
    recorder.tracker = open_tracker(settings.tracking, out_dir, flat, out_dir.name)
    metered = MeteredGrid(grid, recorder, settings.retries, settings.retry_wait)
    try:
        with recorder.phase("discover"):
            # node-local data or "auto" clients per domain: the SuperNodes' num-partitions says how many
            fixed_split = not node_local and settings.data.clients_per_domain is not None
            expected = data.num_clients(settings.data) if fixed_split else None
            clients = discover_clients(metered, recorder, expected, settings.timeout, settings.min_clients)
        if checkpoint.results is not None:
            recorder.take_over(checkpoint.results)
        class_names = agreed_class_names(clients, node_local)
        recorder.class_names = class_names
        if node_local:  # each node numbers its labels by the federation's class list
            metered.send_with_every_message(AGREED_CLASSES_KEY, agreed_classes_record(class_names))
        run = RunContext(metered, recorder, checkpoint, settings, clients, class_names)
        if settings.method in ("warmfed", "fgl"):
            WarmFedStrategy(run, plan, use_adapters=settings.method == "warmfed").run()
        elif settings.method in ("fedavg", "fedprox", "fedavg-ft", "fedbn", "ditto"):
            run_federated(run, plan)
        elif settings.method == "local":
            run_local(run)
        else:
            run_centralized(run)
    except BaseException as error:
        recorder.error = f"{type(error).__name__}: {error}"
        if recorder.tracker is not None:
            recorder.tracker.finish(recorder.to_dict(), [])  # what the run got to, before the error goes on
        raise
    finally:
        recorder.write()
    finish_adapters(checkpoint, settings, out_dir)
    save_accuracy_plot(
        out_dir / "accuracy.png", list(recorder.clients.values()), f"{settings.method}, rounds={settings.rounds}"
    )
    results = recorder.to_dict()
    if recorder.tracker is not None:
        figures = [path for path in (out_dir / "samples.png", out_dir / "accuracy.png") if path.exists()]
        recorder.tracker.finish(results, figures)
    print(summary_markdown(results), flush=True)
    return results


def agreed_class_names(clients: list[ClientInfo], node_local: bool = False) -> tuple[str, ...]:
    """The federation's class list: what every client of a shared data set reported (they must agree), or for
    node-local data, where each node has its own classes, the sorted union of theirs."""
    names = {tuple(c.class_names) for c in clients}
    if node_local:
        return tuple(sorted({name for client in clients for name in client.class_names}))
    if len(names) != 1:
        raise FederationMismatchError(f"clients disagree on the class names: {sorted(names)}")
    return names.pop()


def make_server_app() -> ServerApp:
    """A ServerApp running `run_experiment` with the run config Flower gives it (the clients get the same)."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        run_experiment(grid, context.run_config)

    return app
