"""Optional experiment tracking of a run's metrics in TensorBoard or MLflow (`tracking` key; local files only).

What is recorded: the run's settings (MLflow parameters, TensorBoard text), each phase's seconds,
after each round the global model's accuracy per client and on average, at the end every client's
global and personalized accuracy and bytes and the run's averages, and the figures the run draws
(`samples.png`, `accuracy.png`). Everything goes under the run directory:

- TensorBoard: `<run>/tensorboard/` (`tensorboard --logdir <run>/tensorboard`);
- MLflow: a SQLite store `<run>/mlflow/mlflow.db` with artifacts beside it
  (`mlflow ui --backend-store-uri sqlite:///<run>/mlflow/mlflow.db`).

The libraries are an optional extra: `pip install -e '.[tracking]'`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Protocol

from warmfed_flwr.config import TRACKERS, ConfigError

INSTALL_HINT = "install the optional extra: pip install -e '.[tracking]'"


class Tracker(Protocol):
    """Where a run's numbers go besides results.json."""

    def phase(self, name: str, seconds: float) -> None:
        """A phase finished after `seconds`."""

    def round(self, phase: str, server_round: int, accuracies: Mapping[int, float], average: float | None) -> None:
        """The global model's accuracy per client (by partition id) after a round."""

    def finish(self, results: Mapping[str, Any], figures: list[Path]) -> None:
        """The final results.json document and the figures; closes the tracker."""


class TensorBoardTracker:
    """Scalars, text and images in TensorBoard event files (torch.utils.tensorboard)."""

    def __init__(self, out_dir: Path, run_config: Mapping[str, Any]) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(out_dir / "tensorboard"))
        self.writer.add_text("run_config", "```\n" + json.dumps(dict(run_config), indent=2) + "\n```")
        self.phases = 0

    def phase(self, name: str, seconds: float) -> None:
        self.phases += 1
        self.writer.add_scalar(f"phase_seconds/{name}", seconds, self.phases)

    def round(self, phase: str, server_round: int, accuracies: Mapping[int, float], average: float | None) -> None:
        if average is not None:
            self.writer.add_scalar(f"{phase}/global_acc", average, server_round)
        for pid, accuracy in accuracies.items():
            self.writer.add_scalar(f"{phase}/global_acc/client_{pid}", accuracy, server_round)

    def finish(self, results: Mapping[str, Any], figures: list[Path]) -> None:
        import numpy as np
        from PIL import Image

        for name, value in flat_results(results).items():
            self.writer.add_scalar(name, value, 0)
        for figure in figures:
            with Image.open(figure) as image:
                self.writer.add_image(figure.stem, np.asarray(image.convert("RGB")), 0, dataformats="HWC")
        self.writer.close()


class MlflowTracker:
    """Parameters, metrics and artifacts of one MLflow run in a local SQLite store."""

    def __init__(self, out_dir: Path, run_config: Mapping[str, Any], run_name: str) -> None:
        import mlflow

        folder = out_dir / "mlflow"
        folder.mkdir(parents=True, exist_ok=True)
        self.client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{folder / 'mlflow.db'}")
        experiment = self.client.get_experiment_by_name("warmfed-flwr")
        experiment_id = (
            experiment.experiment_id if experiment is not None
            else self.client.create_experiment("warmfed-flwr", artifact_location=(folder / "artifacts").as_uri())
        )
        self.run_id = self.client.create_run(experiment_id, run_name=run_name).info.run_id
        for key, value in run_config.items():
            self.client.log_param(self.run_id, key, value)
        self.phases = 0

    def phase(self, name: str, seconds: float) -> None:
        self.phases += 1
        self.client.log_metric(self.run_id, f"phase_seconds.{name}", seconds, step=self.phases)

    def round(self, phase: str, server_round: int, accuracies: Mapping[int, float], average: float | None) -> None:
        if average is not None:
            self.client.log_metric(self.run_id, f"{phase}.global_acc", average, step=server_round)
        for pid, accuracy in accuracies.items():
            self.client.log_metric(self.run_id, f"{phase}.global_acc.client_{pid}", accuracy, step=server_round)

    def finish(self, results: Mapping[str, Any], figures: list[Path]) -> None:
        for name, value in flat_results(results).items():
            self.client.log_metric(self.run_id, name.replace("/", "."), value)
        for figure in figures:
            self.client.log_artifact(self.run_id, str(figure))
        self.client.set_terminated(self.run_id)


def flat_results(results: Mapping[str, Any]) -> dict[str, float]:
    """The run's averages and every client's accuracies and bytes as name -> number."""
    flat = {f"final/{name}": float(value) for name, value in results["averages"].items() if value is not None}
    for client in results["clients"]:
        for key in ("global_acc", "personal_acc", "bytes_up", "bytes_down"):
            if client[key] is not None:
                flat[f"final/{key}/client_{client['partition_id']}"] = float(client[key])
    return flat


def open_tracker(kind: str, out_dir: Path, run_config: Mapping[str, Any], run_name: str) -> Tracker | None:
    """The tracker the `tracking` key names (None for "none"); a missing library is a ConfigError naming the key."""
    if kind == "none":
        return None
    try:
        if kind == "tensorboard":
            return TensorBoardTracker(out_dir, run_config)
        if kind == "mlflow":
            return MlflowTracker(out_dir, run_config, run_name)
    except ImportError as error:
        raise ConfigError(f"config key 'tracking': {kind} is not installed ({error}); {INSTALL_HINT}") from error
    raise ConfigError(f"config key 'tracking': {kind!r} is not one of {', '.join(TRACKERS)}")
