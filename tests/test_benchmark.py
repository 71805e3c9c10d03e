"""Benchmark runner: CSV rows, resume logic, matrix selection and the report."""

import subprocess
import sys
from pathlib import Path

import pytest

from warmfed_flwr.benchmark.matrix import default_matrix, select
from warmfed_flwr.benchmark.report import write_report
from warmfed_flwr.benchmark.rows import COLUMNS, append_rows, is_done, read_rows, rows_from_results

ROOT = Path(__file__).resolve().parents[1]
RESULTS = {
    "rounds": 5,
    "seed": 1,
    "averages": {"global_acc": 0.8, "personal_acc": None, "personal_acc_min": None, "bytes_up": 100, "bytes_down": 300},
    "domains": {"clean": {"global_acc": 0.9}, "thick": {"global_acc": 0.7}},
    "clients": [{"partition_id": 0, "personal_acc": None}],
}


def test_rows_skip_missing_metrics_and_end_with_seconds():
    rows = rows_from_results("d", "fedavg", RESULTS, 12.5)
    metrics = [r["metric"] for r in rows]
    assert "personal_acc" not in metrics and metrics[-1] == "seconds"
    assert {"global_acc:clean", "global_acc:thick", "bytes_up", "bytes_down"} <= set(metrics)


def test_resume_skips_finished_cells_only(tmp_path):
    csv_path = tmp_path / "bench.csv"
    assert read_rows(csv_path) == [] and not is_done([], "d", "fedavg", 5, 1)
    rows = rows_from_results("d", "fedavg", RESULTS, 12.5)
    append_rows(csv_path, rows[:-1])  # interrupted before the seconds row: not done
    assert not is_done(read_rows(csv_path), "d", "fedavg", 5, 1)
    append_rows(csv_path, rows[-1:])
    existing = read_rows(csv_path)
    assert is_done(existing, "d", "fedavg", 5, 1)
    assert not is_done(existing, "d", "fedavg", 5, 2) and not is_done(existing, "d", "fedavg", 20, 1)
    assert not is_done(existing, "other", "fedavg", 5, 1)
    assert csv_path.read_text().splitlines()[0] == ",".join(COLUMNS)


def test_csv_with_other_columns_is_refused(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="expected columns"):
        read_rows(bad)


def test_matrix_covers_the_comparison_and_select_names_unknown_labels():
    cells = {(e.label, e.rounds) for e in default_matrix()}
    assert {("fedavg", r) for r in (1, 5, 20, 50)} <= cells and {("warmfed", 0), ("warmfed", 5), ("fgl", 0)} <= cells
    assert {e.label for e in select(default_matrix(), ["local", "fgl"])} == {"local", "fgl"}
    with pytest.raises(ValueError, match="fedsgd"):
        select(default_matrix(), ["fedsgd"])


def test_report_shows_mean_and_std_over_seeds(tmp_path):
    csv_path = tmp_path / "d.csv"
    for seed, acc in ((0, 0.8), (1, 0.6)):
        append_rows(csv_path, rows_from_results("d", "fedavg", {**RESULTS, "seed": seed,
                                                               "averages": {**RESULTS["averages"], "global_acc": acc}}, 10))
    report = write_report(csv_path, "d").read_text()
    assert "| fedavg | 5 | 2 | 0.700 ± 0.141 |" in report
    assert (tmp_path / "d-accuracy-vs-bytes.png").stat().st_size > 0


def test_runner_smoke_two_methods_then_resume_skips_them(tmp_path, flwr_cli_env):
    """The real runner: 1 seed, 2 methods through `flwr run`; a second call finds both cells done."""
    csv_path = tmp_path / "smoke.csv"
    command = [sys.executable, "-m", "warmfed_flwr.benchmark", "--preset", str(ROOT / "conf" / "smoke.toml"),
               "--csv", str(csv_path), "--seeds", "0", "--methods", "local", "centralized"]
    first = subprocess.run(command, env=flwr_cli_env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    second = subprocess.run(command, env=flwr_cli_env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert "2 cells, 0 already" in first.stdout and "2 cells, 2 already" in second.stdout
    rows = read_rows(csv_path)
    assert {(r["method"], r["metric"]) for r in rows} >= {("local", "personal_acc"), ("centralized", "global_acc")}
    assert "| centralized | 0 | 1 |" in (tmp_path / "smoke-report.md").read_text()
