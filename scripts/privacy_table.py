"""The privacy table: WarmFed one-shot on the default data at several DP budgets, each run audited.

    PATH=.venv/bin:$PATH PYTHONPATH=. .venv/bin/python scripts/privacy_table.py \
        [--epsilons 0 8 3 1] [--seeds 0 1 2] [--csv benchmarks/privacy.csv] [--preset conf/X.toml]

For every (seed, epsilon): one run of the app through `flwr run` (method warmfed, rounds 0, adapters
kept). Epsilon 0 is the default run, exact label counts sent; a private run cannot send exact label
counts (they are not covered by the adapters' guarantee) and sends none. Each run is then
- audited by scripts/privacy_audit.py (membership AUC of the adapters, near-copy shares, distance
  ratios; `<run>/privacy/`),
- judged: the class and domain fidelity of its synthetic pool, by the judges of
  scripts/measure_generative.py (trained once on the real train images of every domain).
One CSV row per (seed, epsilon); rows already in the CSV are skipped and a finished run directory
is measured without running it again, so an interrupted table continues. The means and spreads per
epsilon are printed as a markdown table.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
from pathlib import Path

import torch

from measure_generative import accuracy, in_memory, train_domain_judge, train_judge
from plot_samples import synthetic_shares
from privacy_audit import audit
from warmfed_flwr.benchmark.claims import mean_spread
from warmfed_flwr.config import Settings
from warmfed_flwr.data import load_domain_set
from warmfed_flwr.data.types import float_pixels
from warmfed_flwr.launch import requested_config, run_app, toml_value

COLUMNS = (
    "seed", "epsilon", "spent_epsilon", "noise_multiplier", "class_fidelity", "domain_fidelity", "global_acc",
    "personal_acc", "membership_auc", "pixels_near_copy_share", "features_near_copy_share", "pixels_ratio_median",
    "lora_seconds", "bytes_up",
)
SUMMARY_COLUMNS = COLUMNS[2:]
JUDGE_SEED = 0  # the same judges for every run


class Judges:
    """The class judge and the domain judge of measure_generative.py, trained once on the real data."""

    def __init__(self, settings: Settings) -> None:
        data = in_memory(load_domain_set(settings.data), settings.data.image_size)
        self.domain_index = {domain.name: index for index, domain in enumerate(data.domains)}
        images = torch.cat([domain.train.images for domain in data.domains])
        labels = torch.cat([domain.train.labels for domain in data.domains])
        self.classes = train_judge(images, labels, len(data.class_names), settings.seed)
        self.domains = train_domain_judge(data, settings.seed)

    def fidelity(self, run_dir: Path, results: dict) -> tuple[float, float]:
        """Mean over clients of the class and domain fidelity of each client's synthetic share."""
        domain_of = {client["partition_id"]: client["domain"] for client in results["clients"]}
        class_scores, domain_scores = [], []
        for pid, share in synthetic_shares(run_dir).items():
            images = float_pixels(share.images)
            class_scores.append(accuracy(self.classes, images, share.labels))
            own_domain = torch.full_like(share.labels, self.domain_index[domain_of[pid]])
            domain_scores.append(accuracy(self.domains, images, own_domain))
        return statistics.fmean(class_scores), statistics.fmean(domain_scores)


def run_config(seed: int, epsilon: float) -> dict[str, object]:
    """The run-config keys of one cell: the default run, private at `epsilon` (0: not private)."""
    config: dict[str, object] = {"method": "warmfed", "rounds": 0, "seed": seed, "keep-adapters": True}
    if epsilon > 0:
        config |= {"lora.dp-epsilon": epsilon, "lora.send-label-counts": False}
    return config


def measure_cell(run_dir: Path, seed: int, epsilon: float, judges: Judges) -> dict[str, object]:
    """The table row of a finished run."""
    results = json.loads((run_dir / "results.json").read_text())
    averages = audit(run_dir, run_dir / "privacy")["averages"]
    class_fidelity, domain_fidelity = judges.fidelity(run_dir, results)
    details = [client["details"] for client in results["clients"]]
    lora_seconds = sum(phase["seconds"] for phase in results["phases"] if phase["name"] == "lora")
    return {
        "seed": seed,
        "epsilon": epsilon,
        "spent_epsilon": max((d.get("dp_epsilon", 0.0) for d in details), default=0.0),
        "noise_multiplier": statistics.fmean(d.get("dp_noise_multiplier", 0.0) for d in details),
        "class_fidelity": class_fidelity,
        "domain_fidelity": domain_fidelity,
        "global_acc": results["averages"]["global_acc"],
        "personal_acc": results["averages"]["personal_acc"],
        "membership_auc": averages["membership_auc"],
        "pixels_near_copy_share": averages["pixels_near_copy_share"],
        "features_near_copy_share": averages.get("features_near_copy_share", float("nan")),
        "pixels_ratio_median": averages["pixels_ratio_median"],
        "lora_seconds": lora_seconds,
        "bytes_up": results["averages"]["bytes_up"],
    }


def finished(run_dir: Path) -> bool:
    """Whether `run_dir` holds a completed run with its adapters kept (then it is measured, not run again)."""
    results = run_dir / "results.json"
    return results.is_file() and (run_dir / "adapters").is_dir() and not json.loads(results.read_text())["failures"]


def read_rows(path: Path) -> list[dict[str, str]]:
    """The rows already measured (none if the CSV does not exist)."""
    if not path.exists():
        return []
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def summary(rows: list[dict[str, str]]) -> str:
    """Mean ± standard deviation over seeds of every measured column, one markdown row per epsilon."""
    lines = ["| epsilon | seeds | " + " | ".join(SUMMARY_COLUMNS) + " |", "|---" * (len(SUMMARY_COLUMNS) + 2) + "|"]
    for epsilon in sorted({float(r["epsilon"]) for r in rows}, key=lambda e: (e != 0, -e)):
        cell_rows = [r for r in rows if float(r["epsilon"]) == epsilon]
        cells = []
        for column in SUMMARY_COLUMNS:
            mean, spread = mean_spread([float(r[column]) for r in cell_rows])
            cells.append(f"{mean:.3f} ± {spread:.3f}" if column != "bytes_up" else f"{mean:,.0f}")
        lines.append(f"| {'off' if epsilon == 0 else f'{epsilon:g}'} | {len(cell_rows)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epsilons", type=float, nargs="+", default=[0.0, 8.0, 3.0, 1.0], help="0 = not private")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--csv", type=Path, default=Path("benchmarks/privacy.csv"))
    parser.add_argument("--preset", help="base run-config preset (TOML; default: the app's defaults)")
    parser.add_argument("--runs-dir", type=Path, help="where run directories go (default: <csv stem>-runs/ beside the CSV)")
    args = parser.parse_args()

    runs_dir = (args.runs_dir or args.csv.with_name(f"{args.csv.stem}-runs")).resolve()
    rows = read_rows(args.csv)
    done = {(int(r["seed"]), float(r["epsilon"])) for r in rows}
    judges = None
    for seed in args.seeds:
        for epsilon in args.epsilons:
            if (seed, epsilon) in done:
                continue
            out_dir = runs_dir / f"epsilon-{epsilon:g}-s{seed}"
            overrides = " ".join(f"{k}={toml_value(v)}" for k, v in run_config(seed, epsilon).items())
            config = requested_config(args.preset, overrides, str(out_dir))
            if not finished(out_dir):
                run_app(config, Path(".").resolve())
            judges = judges or Judges(Settings.from_run_config({**config, "seed": JUDGE_SEED}))
            row = measure_cell(out_dir, seed, epsilon, judges)
            print(f"[privacy] {json.dumps(row)}", flush=True)
            new_file = not args.csv.exists()
            with args.csv.open("a", newline="") as handle:
                writer = csv.DictWriter(handle, fieldnames=COLUMNS)
                if new_file:
                    writer.writeheader()
                writer.writerow(row)
            rows.append({k: str(v) for k, v in row.items()})
    print(summary(rows))


if __name__ == "__main__":
    main()
