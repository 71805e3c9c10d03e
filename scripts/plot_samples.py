"""Draw a finished WarmFed/FGL run's synthetic images next to the real images of each client.

    python scripts/plot_samples.py --run outputs/2026-11-29-120000 --out docs/warmfed-samples.png

The ServerApp never reads client images, so its own samples.png shows synthetic rows only. This
script, run where the data set is readable (a simulation's machine), reads the run's synthetic
pool from `<run>/artifacts/` and its settings from `<run>/run_config.json`, and draws for every
client (at most 24, spread over all) one synthetic row (odd rows) and one row of its real
training images (even rows).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from warmfed_flwr import data
from warmfed_flwr.config import Settings
from warmfed_flwr.data.types import ImageSplit
from warmfed_flwr.run.artifacts import ArtifactCache
from warmfed_flwr.run.checkpoint import ARTIFACTS_DIR
from warmfed_flwr.run.plots import save_sample_grid, spread


def synthetic_shares(run_dir: Path) -> dict[int, ImageSplit]:
    """The run's synthetic pool, by partition id (the key of its `warmstart-generate` checkpoint entry)."""
    checkpoint = json.loads((run_dir / "checkpoint.json").read_text())
    keys = [entry["key"] for entry in checkpoint["finished"] if entry["phase"] == "warmstart-generate"]
    if not keys:
        raise SystemExit(f"{run_dir} has no finished warmstart-generate phase: not a warmfed/fgl run, or it stopped early")
    stored = ArtifactCache(run_dir / ARTIFACTS_DIR).load_pool(keys[-1])
    if stored is None:
        raise SystemExit(f"the synthetic pool {keys[-1]} is missing from {run_dir / ARTIFACTS_DIR}")
    return stored[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, required=True, help="the run directory (holds results.json)")
    parser.add_argument("--out", type=Path, required=True, help="the PNG to write")
    args = parser.parse_args()
    settings = Settings.from_run_config(json.loads((args.run / "run_config.json").read_text()))
    class_names: tuple[str, ...] = ()
    rows: list[tuple[str, ImageSplit]] = []
    results = json.loads((args.run / "results.json").read_text())
    partitions = max(c["partition_id"] for c in results["clients"]) + 1  # the run's federation size ("auto" splits)
    for pid, share in spread(sorted(synthetic_shares(args.run).items())):
        client = data.load_client_data(settings.data, pid, partitions)
        class_names = client.class_names
        rows.append((f"synthetic {pid}\n{client.domain}", share))
        rows.append((f"real {pid}\n{client.domain}", client.train))
    save_sample_grid(args.out, rows, class_names)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
