"""summary.md: a run's per-client table, averages, phase timings and failures, in markdown, read from its
results.json document (`RunRecorder.to_dict`)."""

from __future__ import annotations

from typing import Any, Mapping


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def summary_markdown(results: Mapping[str, Any]) -> str:
    """A markdown table per client plus averages, phases and failures, from a results.json document.

    Personalized accuracy is given on the client's own test split, on other clients' test splits
    and on a label-balanced test split of its domain (`-` where not measured).
    """
    lines = [
        f"# {results['method']} (rounds={results['rounds']}, seed={results['seed']}, data={results['dataset']})",
        "",
        "| client | domain | global acc | personalized acc | on others | balanced | bytes up | bytes down |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for c in results["clients"]:  # by partition id
        lines.append(
            f"| {c['partition_id']} | {c['domain']} | {_fmt(c['global_acc'])} | {_fmt(c['personal_acc'])} "
            f"| {_fmt(c['personal_acc_others'])} | {_fmt(c['personal_acc_balanced'])} | {c['bytes_up']:,} | {c['bytes_down']:,} |"
        )
    avg = results["averages"]
    lines.append(
        f"| **mean** | | **{_fmt(avg['global_acc'])}** | **{_fmt(avg['personal_acc'])}** "
        f"| {_fmt(avg['personal_acc_others'])} | {_fmt(avg['personal_acc_balanced'])} "
        f"| {avg['bytes_up']:,} | {avg['bytes_down']:,} |"
    )
    lines += ["", "| phase | seconds |", "|---|---|"]
    lines += [
        f"| {p['name']}{' (cached)' if p.get('cached') else ''}{' (resumed)' if p.get('resumed') else ''} "
        f"| {p['seconds']:.1f} |"
        for p in results["phases"]
    ]
    if results["failures"]:
        lines += ["", "Failures:"]
        lines += [f"- {f['phase']}: client {f['partition_id']} (node {f['node_id']}): {f['reason']}" for f in results["failures"]]
    return "\n".join(lines) + "\n"
