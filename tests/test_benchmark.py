"""Benchmark runner: CSV rows, resume logic, matrix selection and the report."""

import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from warmfed_flwr.benchmark.claims import claim_rows
from warmfed_flwr.benchmark.goals import goal_rows
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
    cells = {(e.label, r) for e in default_matrix() for r in e.cell_rounds}
    assert {("fedavg", r) for r in (1, 5, 20, 50)} <= cells and {("fedprox", r) for r in (1, 5, 20, 50)} <= cells
    assert {("warmfed", 0), ("warmfed", 5), ("fgl", 0), ("fgl", 5), ("local", 0), ("centralized", 0)} <= cells
    assert len(cells) == 17 and len(default_matrix()) == 9  # 17 cells from 9 runs per seed
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
    for plot in ("d-accuracy-vs-bytes.png", "d-accuracy-vs-rounds.png"):  # real pictures with something drawn
        with Image.open(tmp_path / plot) as image:
            assert image.format == "PNG" and image.width >= 400 and image.height >= 300
            assert len(image.convert("RGB").getcolors(maxcolors=1 << 16) or range(1 << 16)) > 10


def test_report_plots_own_accuracy_against_resilience_only_where_measured(tmp_path):
    csv_path = tmp_path / "p.csv"
    for seed, (own, others) in enumerate(((0.9, 0.4), (0.8, 0.5))):
        averages = {**RESULTS["averages"], "personal_acc": own, "personal_acc_others": others}
        append_rows(csv_path, rows_from_results("p", "ditto", {**RESULTS, "seed": seed, "averages": averages}, 10))
    assert "| 0.850 ± 0.071 | - | 0.450 ± 0.071 | - |" in write_report(csv_path, "p").read_text()
    with Image.open(tmp_path / "p-resilience.png") as image:  # a real picture with something drawn
        assert image.width >= 400 and len(image.convert("RGB").getcolors(maxcolors=1 << 16) or range(1 << 16)) > 10
    global_only = tmp_path / "g.csv"
    append_rows(global_only, rows_from_results("g", "fedavg", RESULTS, 10))
    write_report(global_only, "g")
    assert (tmp_path / "g-accuracy-vs-bytes.png").exists() and not (tmp_path / "g-resilience.png").exists()


def test_runner_smoke_then_resume_skips_the_cell(tmp_path, flwr_cli_env):
    """The real runner: 1 seed, 1 method through `flwr run`; a second call finds the cell done."""
    csv_path = tmp_path / "smoke.csv"
    command = [sys.executable, "-m", "warmfed_flwr.benchmark", "--preset", str(ROOT / "conf" / "smoke.toml"),
               "--csv", str(csv_path), "--seeds", "0", "--methods", "centralized"]
    first = subprocess.run(command, env=flwr_cli_env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    second = subprocess.run(command, env=flwr_cli_env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert "1 cells, 0 already" in first.stdout and "1 runs to go" in first.stdout
    assert "1 cells, 1 already" in second.stdout and "0 runs to go" in second.stdout
    rows = read_rows(csv_path)
    assert {(r["method"], r["metric"]) for r in rows} >= {("centralized", "global_acc"), ("centralized", "bytes_up")}
    assert "| centralized | 0 | 1 |" in (tmp_path / "smoke-report.md").read_text()


def _cells(overrides=None):
    """A matrix where every claim holds; `overrides` ({(cell, metric): value}) replace single means."""
    cells = {
        ("warmfed", 0): {"global_acc": [0.9, 0.92], "personal_acc": [0.95], "bytes_up": [3e6],
                         "personal_acc:client0": [0.95], "personal_acc:client1": [0.9]},
        ("warmfed", 5): {"global_acc": [0.95]},
        ("fedavg", 5): {"global_acc": [0.55], "bytes_up": [4.6e6], "personal_acc:client0": [0.9], "personal_acc:client1": [0.85]},
        ("fedavg", 50): {"global_acc": [0.94]},
        ("fgl", 0): {"global_acc": [0.5]},
        ("local", 0): {"personal_acc:client0": [0.93], "personal_acc:client1": [0.8]},
        ("warmfed-dsd-none", 0): {"personal_acc": [0.94]},
    }
    for (cell, metric), value in (overrides or {}).items():
        cells.setdefault(cell, {})[metric] = [value]
    return cells


def _verdicts(cells):
    return {claim: holds for claim, _, _, holds in claim_rows(cells)}


def test_claims_hold_on_a_matrix_that_meets_them():
    assert set(_verdicts(_cells()).values()) == {"yes"}


@pytest.mark.parametrize(
    "cell_metric, value, claim",
    [
        ((("fgl", 0), "global_acc"), 0.87, "FGL one-shot + 0.05"),  # 0.91 < 0.87 + 0.05: the margin counts
        ((("fedavg", 50), "global_acc"), 0.96, "FedAvg 50 rounds"),
        ((("warmfed-dsd-none", 0), "personal_acc"), 0.96, "DSD none"),
        ((("fedavg", 5), "bytes_up"), 3e6, "upload"),  # equal upload is not less
        ((("local", 0), "personal_acc:client1"), 0.91, "every client"),  # one client below a baseline
    ],
)
def test_each_claim_fails_when_its_numbers_say_so(cell_metric, value, claim):
    verdicts = _verdicts(_cells({cell_metric: value}))
    failed = [text for text, holds in verdicts.items() if holds != "yes"]
    assert len(failed) == 1 and claim in failed[0] and verdicts[failed[0]] == "**no**"


def test_claims_of_cells_not_run_say_so():
    cells = _cells()
    del cells[("fedavg", 50)], cells[("local", 0)]
    verdicts = _verdicts(cells)
    assert verdicts["WarmFed 5 rounds global >= FedAvg 50 rounds"] == "not run"
    assert [v for t, v in verdicts.items() if "every client" in t] == ["not run"]


def test_the_personalization_goal_needs_own_accuracy_and_resilience_beyond_the_spread():
    peers = {("warmfed-ft", 0): {"personal_acc": [0.90, 0.92], "personal_acc_others": [0.50, 0.52]},
             ("fedbn", 20): {"personal_acc": [0.85, 0.87], "personal_acc_others": [0.55, 0.57]},
             ("ditto", 20): {"personal_acc": [0.80], "personal_acc_others": [0.40]}}
    cells = peers | {
        ("warmfed-dsd", 0): {"personal_acc": [0.91, 0.93], "personal_acc_others": [0.65, 0.66]},  # meets it
        ("warmfed-dsd-self", 0): {"personal_acc": [0.91, 0.93], "personal_acc_others": [0.50, 0.70]},  # spread too wide
        ("warmfed-dsd-constant", 0): {"personal_acc": [0.89, 0.90], "personal_acc_others": [0.70, 0.71]},  # own below
    }
    rows = {row[0]: row for row in goal_rows(cells)}
    assert set(rows) == {"warmfed-dsd", "warmfed-dsd-self", "warmfed-dsd-constant"}
    assert rows["warmfed-dsd"][1] == "0.920 ± 0.014 vs warmfed-ft r0 0.910 ± 0.014"
    assert rows["warmfed-dsd"][2] == "0.655 ± 0.007 vs fedbn r20 0.560 ± 0.014" and rows["warmfed-dsd"][3] == "-"
    assert [rows[v][-1] for v in ("warmfed-dsd", "warmfed-dsd-self", "warmfed-dsd-constant")] == ["yes", "**no**", "**no**"]
    assert goal_rows(peers) == []
    # the comparison matrix holds DSD ablations but none of the peers: no goal, its report keeps the paper's claims
    assert goal_rows({("warmfed-dsd-constant", 0): {"personal_acc": [0.95, 0.96]}, ("fedavg", 5): {"personal_acc": [0.8]}}) == []
