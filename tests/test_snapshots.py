"""Snapshots: the results a run records on the way equal those of a run stopped at that round."""

from __future__ import annotations

from expect import assert_accuracies
from warmfed_flwr.benchmark.rows import cells_of_run

NUMBERS = ("global_acc", "personal_acc", "personal_acc_others", "bytes_up", "bytes_down")


def numbers(clients: list[dict]) -> dict[int, tuple]:
    """Accuracies and bytes per partition."""
    return {c["partition_id"]: tuple(c[k] for k in NUMBERS) for c in clients}


def test_fedavg_ft_snapshot_of_round_1_equals_a_1_round_run_and_leaves_the_2_round_run_as_it_was(
    run_in_process, tmp_path
):
    def run(name: str, **overrides) -> dict:
        config = {"method": "fedavg-ft", "evaluate-others": 1, "output-dir": str(tmp_path / name), **overrides}
        return run_in_process(config, num_supernodes=4)

    one_round = run("one", rounds=1)
    plain = run("plain", rounds=2)
    with_snapshot = run("snapshot", rounds=2, **{"snapshot-rounds": "1"})

    [snapshot] = with_snapshot["snapshots"]
    assert snapshot["round"] == 1
    assert numbers(snapshot["clients"]) == numbers(one_round["clients"])
    assert_accuracies(snapshot["clients"], [0, 1, 2, 3], ["global_acc", "personal_acc"])  # fine-tuned in the snapshot
    assert all(0.0 <= c["personal_acc_others"] <= 1.0 for c in snapshot["clients"])  # and cross-evaluated
    assert snapshot["averages"] == one_round["averages"]
    assert numbers(with_snapshot["clients"]) == numbers(plain["clients"])
    assert with_snapshot["round_history"] == plain["round_history"]
    assert plain["snapshots"] == [] and 0 < with_snapshot["snapshot_seconds"] < with_snapshot["seconds_elapsed"]


def test_warmfed_snapshot_of_round_0_equals_the_one_shot_run(run_in_process, tmp_path):
    cache = str(tmp_path / "cache")  # the two runs share adapters and pool, as in the benchmark
    one_shot = run_in_process(
        {"method": "warmfed", "rounds": 0, "cache-dir": cache, "output-dir": str(tmp_path / "one-shot")}, num_supernodes=4
    )
    five = run_in_process(
        {"method": "warmfed", "rounds": 1, "snapshot-rounds": "0", "cache-dir": cache, "output-dir": str(tmp_path / "r1")},
        num_supernodes=4,
    )
    [snapshot] = five["snapshots"]
    assert snapshot["round"] == 0
    taken, alone = numbers(snapshot["clients"]), numbers(one_shot["clients"])
    # bytes included: messages carry only their phase's payload, not the run config (which differs in `rounds`)
    assert taken == alone and len(taken) == 4
    assert snapshot["cached_seconds"] > 0  # adapters and pool came from the cache before the snapshot
    # the run's own numbers went on from before the snapshot: its round's uploads come on top of the one-shot run's
    snapshot_up = {c["partition_id"]: c["bytes_up"] for c in snapshot["clients"]}
    assert all(c["bytes_up"] > snapshot_up[c["partition_id"]] for c in five["clients"])
    assert_accuracies(five["clients"], [0, 1, 2, 3], ["global_acc", "personal_acc"])


def test_cells_of_a_run_split_its_seconds_between_snapshots_and_itself():
    results = {
        "rounds": 5, "seed": 0, "clients": [], "averages": {}, "domains": {},
        "phases": [{"name": "lora", "seconds": 100.0, "cached": True}, {"name": "rounds", "seconds": 30.0}],
        "seconds_elapsed": 50.0, "snapshot_seconds": 4.0, "cached_seconds": 100.0,
        "snapshots": [{"round": 0, "clients": [], "averages": {"global_acc": 0.5}, "domains": {},
                       "seconds": 12.0, "cached_seconds": 100.0}],
    }
    (snapshot, snapshot_seconds), (own, own_seconds) = cells_of_run(results, wall_seconds=80.0)
    assert snapshot["rounds"] == 0 and snapshot["averages"] == {"global_acc": 0.5} and own is results
    assert snapshot_seconds == (80.0 - 50.0) + 12.0 + 100.0  # start-up + elapsed to the snapshot + cached phases
    assert own_seconds == 80.0 - 4.0 + 100.0  # the run without the time spent on its snapshot
