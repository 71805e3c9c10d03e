"""Run the comparison matrix through the real app (`flwr run`), resumably, and write the report.

    python -m warmfed_flwr.benchmark --preset conf/smoke.toml --csv benchmarks/digits-domains.csv \
        [--seeds 0 1 2] [--methods warmfed fedavg ...] [--name digits-domains]

Rows already in the CSV are skipped, so an interrupted matrix continues where it stopped.
A run may fill several cells: FedAvg's 50-round run also records its 1-, 5- and 20-round cells on
the way, WarmFed's 5-round run its one-shot cell (see matrix.py and warmfed_flwr/run/snapshots.py).
Adapters and synthetic pools are cached under <runs-dir>/cache and shared by the methods that
would compute the same ones (see warmfed_flwr/run/artifacts.py). The report (report.md, accuracy_vs_bytes.png, accuracy_vs_rounds.png) is written next to the CSV.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from warmfed_flwr.benchmark.matrix import MATRICES, select
from warmfed_flwr.benchmark.poisoning import Attack, write_poisoned_app
from warmfed_flwr.benchmark.report import write_report
from warmfed_flwr.benchmark.rows import append_rows, cells_of_run, is_done, read_rows, rows_from_results
from warmfed_flwr.launch import requested_config, run_app, toml_value


def format_seconds(seconds: float) -> str:
    """h:mm:ss."""
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", help="base run-config preset (TOML)")
    parser.add_argument("--run-config", help="extra overrides for every run, e.g. 'generate.steps=10'")
    parser.add_argument("--csv", required=True, type=Path, help="the results CSV (created or continued)")
    parser.add_argument("--name", help="dataset label in the CSV (default: the CSV's file stem)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--matrix", choices=sorted(MATRICES), default="comparison",
                        help="the comparison of methods (default) or of personalized methods")
    parser.add_argument("--methods", nargs="+", help="method labels to run (default: the whole matrix)")
    parser.add_argument("--runs-dir", type=Path, help="where run directories go (default: <csv stem>-runs/ beside the CSV)")
    parser.add_argument("--app-dir", type=Path, default=Path("."), help="the project folder (default: .)")
    parser.add_argument("--attackers", type=int, nargs="+", default=[],
                        help="the robustness matrix: partition ids of the clients that poison their data")
    args = parser.parse_args()

    dataset = args.name or args.csv.stem
    runs_dir = (args.runs_dir or args.csv.with_name(f"{args.csv.stem}-runs")).resolve()
    runs = [(entry, seed) for entry in select(MATRICES[args.matrix](), args.methods) for seed in args.seeds]
    if any(entry.attack for entry, _ in runs) and not args.attackers:
        parser.error("--attackers: the selected entries poison clients; name them (partition ids)")
    existing = read_rows(args.csv)

    def cell_done(label: str, rounds: int, seed: int) -> bool:
        return is_done(existing, dataset, label, rounds, seed)

    todo = [(e, s) for e, s in runs if not all(cell_done(e.label, r, s) for r in e.cell_rounds)]
    cells = sum(len(e.cell_rounds) for e, _ in runs)
    cells_done = sum(cell_done(e.label, r, s) for e, s in runs for r in e.cell_rounds)
    print(f"[bench] {cells} cells, {cells_done} already in {args.csv}, {len(todo)} runs to go", flush=True)
    started = time.perf_counter()
    for done, (entry, seed) in enumerate(todo):
        out_dir = runs_dir / f"{entry.label}-r{entry.rounds}-s{seed}"
        app_dir, cache = args.app_dir.resolve(), "cache"
        attack = Attack(entry.attack, tuple(args.attackers)) if entry.attack else None
        if attack is not None:  # a copy of the app in which the attackers poison their data; a cache of its own
            app_dir = write_poisoned_app(app_dir, attack, runs_dir / f"app-{attack.label}")
            cache = f"cache-{attack.label}"
        run_config = {"cache-dir": str(runs_dir / cache), **entry.run_config(seed)}
        overrides = " ".join(f"{k}={toml_value(v)}" for k, v in run_config.items())
        if args.run_config:
            overrides = f"{args.run_config} {overrides}"
        config = requested_config(args.preset, overrides, str(out_dir))
        t0 = time.perf_counter()
        run_app(config, app_dir)
        wall = time.perf_counter() - t0
        results = json.loads((out_dir / "results.json").read_text())
        for cell_results, seconds in cells_of_run(results, wall):
            if not cell_done(entry.label, cell_results["rounds"], seed):
                rows = rows_from_results(dataset, entry.label, cell_results, seconds, attackers=set(args.attackers))
                append_rows(args.csv, rows)
        elapsed = time.perf_counter() - started
        remaining = elapsed / (done + 1) * (len(todo) - done - 1)
        print(
            f"[bench] run {done + 1}/{len(todo)} {entry.label} rounds={','.join(map(str, entry.cell_rounds))} "
            f"seed={seed}: {wall:.0f} s; elapsed {format_seconds(elapsed)}, about {format_seconds(remaining)} left",
            flush=True,
        )
    write_report(args.csv, dataset)


if __name__ == "__main__":
    main()
