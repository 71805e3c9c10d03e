"""Cost per client against the number of clients, from `scripts/measure_scale.py` records (scale.json files).

    python scripts/plot_scale.py benchmarks/scale/*.json --out benchmarks/scale-cost-per-client.png

One line per label given in each record's file name (`<label>-<clients>.json`, e.g. `warmfed-after-1000.json`):
wall seconds per client, and each phase's seconds per client, on the left; the peak memory over all
processes (PSS) and the ServerApp's own peak on the right.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

from matplotlib.figure import Figure


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("records", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    series: dict[str, list[dict]] = defaultdict(list)
    for path in args.records:
        label = path.stem.rsplit("-", 1)[0]
        series[label].append(json.loads(path.read_text()))
    fig = Figure(figsize=(12, 4.5))
    cost, memory = fig.subplots(1, 2)
    for label, records in sorted(series.items()):
        records.sort(key=lambda r: r["clients"])
        clients = [r["clients"] for r in records]
        line, = cost.plot(clients, [r["seconds_per_client"] for r in records], marker="o", label=f"{label}: wall")
        for phase in ("lora", "warmstart-generate", "rounds"):
            if all(phase in r["seconds_per_client_by_phase"] for r in records):
                cost.plot(clients, [r["seconds_per_client_by_phase"][phase] for r in records], marker=".",
                          linestyle="--", color=line.get_color(), alpha=0.6, label=f"{label}: {phase}")
        memory.plot(clients, [r["peak_pss_sum_gib"] for r in records], marker="o", color=line.get_color(),
                    label=f"{label}: all processes (PSS)")
        memory.plot(clients, [r["serverapp_peak_pss_gib"] for r in records], marker="s", linestyle="--",
                    color=line.get_color(), label=f"{label}: ServerApp + engine (PSS)")
    cost.set(xscale="log", xlabel="clients", ylabel="seconds per client", title="cost per client (2 CPU cores)")
    memory.set(xscale="log", xlabel="clients", ylabel="GiB", title="peak memory")
    memory.axhline(4.0, color="grey", linewidth=0.8, linestyle=":")
    for axes in (cost, memory):
        axes.grid(alpha=0.3)
        axes.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
