"""Optional experiment tracking: a run's phases, rounds, final numbers and figures land in TensorBoard or MLflow."""

from __future__ import annotations

import builtins
from pathlib import Path

import mlflow
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from warmfed_flwr.config import ConfigError
from warmfed_flwr.run.tracking import open_tracker


def test_tensorboard_gets_phases_rounds_final_numbers_and_figures(run_in_process, tmp_path: Path) -> None:
    results = run_in_process({"method": "warmfed", "rounds": 1, "tracking": "tensorboard"}, num_supernodes=4)
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard"), size_guidance={"images": 0}).Reload()
    scalars = set(events.Tags()["scalars"])
    assert {"phase_seconds/lora", "phase_seconds/dsd", "rounds/global_acc", "rounds/global_acc/client_3"} <= scalars
    assert events.Scalars("rounds/global_acc")[0].value == pytest.approx(results["round_history"][0]["average"])
    final = events.Scalars("final/personal_acc/client_2")[0].value
    assert final == pytest.approx(results["clients"][2]["personal_acc"])
    assert set(events.Tags()["images"]) == {"samples", "accuracy"}


def test_mlflow_gets_parameters_metrics_and_figures_in_a_local_store(run_in_process, tmp_path: Path) -> None:
    results = run_in_process({"method": "fedavg", "rounds": 2, "tracking": "mlflow"}, num_supernodes=4)
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'run' / 'mlflow' / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("warmfed-flwr").experiment_id])
    assert run.info.status == "FINISHED" and run.data.params["method"] == "fedavg"
    history = client.get_metric_history(run.info.run_id, "rounds.global_acc")
    assert [m.step for m in history] == [1, 2]
    assert history[-1].value == pytest.approx(results["round_history"][-1]["average"])
    assert run.data.metrics["final.global_acc"] == pytest.approx(results["averages"]["global_acc"])
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert artifacts == {"accuracy.png"}  # FedAvg draws no sample grid


def test_a_tracker_that_is_not_installed_names_the_key_and_the_extra(monkeypatch, tmp_path: Path) -> None:
    real_import = builtins.__import__

    def no_mlflow(name, *args, **kwargs):
        if name == "mlflow":
            raise ImportError("No module named 'mlflow'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_mlflow)
    with pytest.raises(ConfigError, match=r"'tracking': mlflow is not installed.*\.\[tracking\]"):
        open_tracker("mlflow", tmp_path, {}, "run")
    assert open_tracker("none", tmp_path, {}, "run") is None
