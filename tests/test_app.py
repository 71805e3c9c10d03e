"""The real ServerApp and ClientApp end to end: in-process simulations and one `flwr run` through the CLI."""

from __future__ import annotations

import json
import re
from collections import Counter
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from flwr.app import Context, Message
from flwr.serverapp import ServerApp
from PIL import Image
from safetensors.numpy import load_file

from expect import assert_accuracies
from log_lines import debug_lines, repeated_app_lines
from warmfed_flwr.client.app import HANDLERS, Handler, build_client_app
from warmfed_flwr.client.context import partition_id
from warmfed_flwr.client.lora import handle_lora
from warmfed_flwr.generative.upload import SCALES
from warmfed_flwr.launch import last_run_status, toml_value
from warmfed_flwr.presets import load_preset
from warmfed_flwr.run.checkpoint import ARTIFACTS_DIR
from warmfed_flwr.run.federation import FederationMismatchError, TooFewClientsError
from warmfed_flwr.run.transport import arrays_to_record, record_to_arrays
from warmfed_flwr.runtime.local_superlink import OwnSuperLink

ROOT = Path(__file__).resolve().parents[1]
RESULT_KEYS = {"method", "rounds", "seed", "clients", "averages", "phases", "failures"}
CLIENT_KEYS = {"partition_id", "domain", "global_acc", "personal_acc", "bytes_up", "bytes_down"}


def recording(handler: Handler, folder: Path) -> Handler:
    """`handler`, first writing down what the ClientApp got: the message's records and its run config."""

    def record(msg: Message, context: Context) -> Message:
        seen = {"type": msg.metadata.message_type, "records": sorted(msg.content.keys()),
                "run_config": dict(context.run_config)}
        (folder / f"{msg.metadata.message_id}.json").write_text(json.dumps(seen))
        return handler(msg, context)

    return record


def test_fedavg_in_process_clients_read_their_settings_from_the_run_config(run_in_process, tmp_path):
    seen_dir = tmp_path / "seen"
    seen_dir.mkdir()
    app = build_client_app({name: recording(handler, seen_dir) for name, handler in HANDLERS.items()})
    overrides = {"method": "fedavg", "rounds": 2, "seed": 3, "train.local-epochs": 2}
    results = run_in_process(overrides, num_supernodes=4, client_app=app)
    seen = [json.loads(path.read_text()) for path in seen_dir.iterdir()]
    assert sorted(Counter(s["type"] for s in seen).items()) == [
        ("evaluate", 8), ("query.info", 4), ("train", 8)  # Flower's strategies send "train", "evaluate"
    ]
    # every ClientApp got the server's whole run config from Flower, and messages only their phase's payload
    assert all(s["run_config"] == json.loads((tmp_path / "run" / "run_config.json").read_text()) for s in seen)
    assert all(s["run_config"]["seed"] == 3 and s["run_config"]["train.local-epochs"] == 2 for s in seen)
    payload = {"query.info": [], "train": ["arrays", "config"], "evaluate": ["arrays", "config"]}
    assert all(s["records"] == payload[s["type"]] for s in seen)
    assert RESULT_KEYS <= results.keys()
    assert [c["domain"] for c in results["clients"]] == ["clean", "inverted", "textured", "thick"]
    for client in results["clients"]:
        assert CLIENT_KEYS <= client.keys()
        assert 0.0 <= client["global_acc"] <= 1.0 and client["personal_acc"] is None
        # two rounds, each moving the whole model (~230 kB) down and up; evaluation traffic is not counted
        assert 2 * 200_000 < client["bytes_up"] < 3 * 200_000
        assert 2 * 200_000 < client["bytes_down"] < 3 * 200_000
    assert [r["round"] for r in results["round_history"]] == [1, 2]
    assert {p["name"] for p in results["phases"]} == {"discover", "rounds"}
    assert results["failures"] == []


def test_warmfed_with_two_clients_records_adapters_pool_and_both_accuracies(warmfed_run_on_two_folders, tmp_path):
    run_dir = warmfed_run_on_two_folders
    results = json.loads((run_dir / "results.json").read_text())
    assert results["failures"] == []
    assert [p["name"] for p in results["phases"]] == ["discover", "lora", "warmstart-generate", "warmstart-train", "dsd"]
    assert_accuracies(results["clients"], [0, 1], ["global_acc", "personal_acc"])
    for client in results["clients"]:
        assert client["details"]["adapter_bytes"] > 0
        assert client["details"]["synthetic_images"] == 20
        assert client["bytes_up"] > client["details"]["adapter_bytes"]
    # The pool of an image-folder run is kept as uint8, like the files; plot_samples.py adds the real rows
    (pool_file,) = (run_dir / ARTIFACTS_DIR).glob("pool-*.safetensors")
    assert {str(array.dtype) for array in load_file(str(pool_file)).values()} == {"uint8", "int64"}
    subprocess.run([sys.executable, str(ROOT / "scripts" / "plot_samples.py"), "--run", str(run_dir), "--out",
                    str(tmp_path / "both.png")], check=True, capture_output=True, timeout=300)
    with Image.open(run_dir / "samples.png") as synthetic_only, Image.open(tmp_path / "both.png") as both:
        assert both.width == synthetic_only.width and both.height > 1.6 * synthetic_only.height  # 4 rows, not 2


def _failing_lora(msg: Message, context) -> Message:
    """Partition 1 crashes, partition 2 sends an adapter with a NaN (in its int8 scales: the default upload), the
    others behave."""
    if partition_id(context) == 1:
        raise RuntimeError("simulated crash during LoRA fit")
    reply = handle_lora(msg, context)
    if partition_id(context) == 2:
        scales = record_to_arrays(reply.content["adapter-scales"])[SCALES].copy()
        scales[0] = np.nan
        reply.content["adapter-scales"] = arrays_to_record({SCALES: scales})
    return reply


def test_warmfed_goes_on_without_a_crashing_client_and_a_bad_adapter(run_in_process, three_domain_folder):
    app = build_client_app({**HANDLERS, "train.lora": _failing_lora})
    results = run_in_process(
        {"method": "warmfed", "data.name": "imagefolder", "data.root": str(three_domain_folder), "min-clients": 1,
         "rounds": 0},
        num_supernodes=3,
        client_app=app,
    )
    failures = {(f["phase"], f["partition_id"]): f["reason"] for f in results["failures"]}
    assert set(failures) == {("lora", 1), ("lora", 2)}
    assert "simulated crash" in failures[("lora", 1)]
    assert "partition 2" in failures[("lora", 2)] and "adapter rejected" in failures[("lora", 2)]
    clients = {c["partition_id"]: c for c in results["clients"]}
    assert "adapter_bytes" in clients[0]["details"] and "adapter_bytes" not in clients[2]["details"]
    assert_accuracies(results["clients"], [0, 1, 2], ["global_acc", "personal_acc"])


def test_below_min_clients_stops_with_a_clear_error_and_keeps_results(run_in_process, three_domain_folder, tmp_path):
    app = build_client_app({**HANDLERS, "train.lora": _failing_lora})
    with pytest.raises(TooFewClientsError, match="min-clients=2"):
        run_in_process(
            {"method": "warmfed", "data.name": "imagefolder", "data.root": str(three_domain_folder), "min-clients": 2},
            num_supernodes=3,
            client_app=app,
        )
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert {f["partition_id"] for f in results["failures"]} == {1, 2}
    assert [p["name"] for p in results["phases"]] == ["discover", "lora"]


def test_federation_sized_for_another_split_fails_fast(run_in_process):
    """A pinned split (one client per domain: 4 clients) cannot run on 2 SuperNodes."""
    with pytest.raises(FederationMismatchError, match="num-supernodes=4"):
        run_in_process({"method": "fedavg", "data.clients-per-domain": 1}, num_supernodes=2)


def test_plain_flwr_run_on_the_default_federation_splits_the_data_over_its_supernodes(tmp_path, flwr_cli_env):
    """`flwr run .` as a Flower user types it: Flower's default local federation has 2 SuperNodes, so with
    data.clients-per-domain="auto" each holds two of the four digit domains."""
    out = tmp_path / "plain-run"
    config = tmp_path / "run.toml"
    config.write_text("".join(f"{k} = {toml_value(v)}\n" for k, v in
                              {**load_preset(ROOT / "conf" / "smoke.toml"), "output-dir": str(out)}.items()))
    subprocess.run(["flwr", "run", str(ROOT), "--stream", "--run-config", str(config)],
                   env=flwr_cli_env, cwd=ROOT, check=True, timeout=600)
    assert last_run_status(flwr_cli_env, ROOT) == "finished:completed"
    results = json.loads((out / "results.json").read_text())
    assert [c["domain"] for c in results["clients"]] == ["clean+inverted", "textured+thick"]
    assert results["failures"] == []
    assert_accuracies(results["clients"], [0, 1], ["global_acc", "personal_acc"])


USER_SERVER_APP = '''"""A user's server_app.py, as in docs/custom-strategy.md: WarmFed with their own strategy for the rounds."""

import json
from pathlib import Path

from flwr.app import ArrayRecord, ConfigRecord, Context, MetricRecord
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg

from warmfed_flwr.server import run_experiment

app = ServerApp()


def trace(context: Context, **entry) -> None:
    with open(Path(str(context.run_config["output-dir"])) / "user-trace.jsonl", "a") as out:
        out.write(json.dumps(entry) + "\\n")


class LoggingFedAvg(FedAvg):
    """Overrides start, as Flower's advanced-pytorch example does, to log before the rounds."""

    def __init__(self, context: Context, **kwargs) -> None:
        super().__init__(**kwargs)
        self.context = context

    def start(self, grid, initial_arrays, num_rounds=3, timeout=3600, train_config=None, evaluate_config=None,
              evaluate_fn=None):
        trace(self.context, event="start", num_rounds=num_rounds, train_config=dict(train_config or {}))
        return super().start(grid, initial_arrays, num_rounds, timeout, train_config, evaluate_config, evaluate_fn)


@app.main()
def main(grid: Grid, context: Context) -> None:
    def evaluate_fn(server_round: int, arrays: ArrayRecord) -> MetricRecord:
        trace(context, event="evaluate_fn", round=server_round, arrays=len(arrays))
        return MetricRecord({"user-round": server_round})

    strategy = LoggingFedAvg(context, min_train_nodes=2, min_evaluate_nodes=2, min_available_nodes=2)
    run_experiment(grid, context.run_config, round_strategy=strategy,
                   train_config=ConfigRecord({"user-note": 7}), evaluate_fn=evaluate_fn)
'''


def test_a_users_strategy_runs_as_written_through_the_launcher_on_a_superlink_of_its_own(tmp_path, flwr_cli_env):
    """`python -m warmfed_flwr.launch` (what `make run` calls) completes a run through `flwr run` of a user's app
    whose server_app.py passes its own FedAvg subclass (start overridden), evaluate_fn and train_config: all
    three take effect. Meanwhile another checkout's SuperLink answers on the ports this environment names, and
    the launcher must not use it."""
    app_dir = tmp_path / "user-app"
    app_dir.mkdir()
    shutil.copy(ROOT / "pyproject.toml", app_dir / "pyproject.toml")
    shutil.copy(ROOT / "client_app.py", app_dir / "client_app.py")
    (app_dir / "server_app.py").write_text(USER_SERVER_APP)
    foreign = OwnSuperLink()
    env = {**flwr_cli_env, **foreign.env()}
    other = subprocess.Popen(
        ["flower-superlink", "--insecure", "--simulation", "--isolation", "subprocess", "--control-api-address",
         f"127.0.0.1:{foreign.ports[1]}", "--host", "127.0.0.1", "--port", str(foreign.http_port)],
        env={**env, "FLWR_HOME": str(tmp_path / "other-checkout")}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        out = tmp_path / "own-run"
        launched = subprocess.run(
            [sys.executable, "-m", "warmfed_flwr.launch", "--app-dir", str(app_dir), "--preset",
             str(ROOT / "conf" / "smoke.toml"), "--run-config", 'method="warmfed" rounds=2', "--output-dir", str(out)],
            env=env, cwd=ROOT, capture_output=True, text=True, timeout=600,
        )
        assert launched.returncode == 0, launched.stdout[-3000:] + launched.stderr[-3000:]
        printed = launched.stdout + launched.stderr  # each line once, none at DEBUG
        assert repeated_app_lines(printed) == {} and debug_lines(printed) == [], printed[-3000:]
        assert printed.count("# warmfed (rounds=2, seed=0") == 1  # the summary, printed by the ServerApp
        own_port = int(re.search(r"local SuperLink of its own on port (\d+)", launched.stdout).group(1))
        assert own_port != foreign.http_port
        assert OwnSuperLink([own_port, 0]).processes() == []  # stopped with everything it started
        listing = subprocess.run(["flwr", "list", "--format", "json"], env={**env, "FLWR_HOME": str(tmp_path / "other-checkout")},
                                 cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert other.poll() is None and json.loads(listing.stdout)["runs"] == []  # the other SuperLink saw no run
    finally:
        foreign.stop()
        other.wait(timeout=30)

    results = json.loads((out / "results.json").read_text())
    assert results["method"] == "warmfed" and len(results["clients"]) == 4
    assert json.loads((out / "run_config.json").read_text())["output-dir"] == str(out)
    traces = [json.loads(line) for line in (out / "user-trace.jsonl").read_text().splitlines()]
    assert traces[0] == {"event": "start", "num_rounds": 2, "train_config": {"user-note": 7}}
    assert [(t["event"], t["round"]) for t in traces[1:]] == [("evaluate_fn", 0), ("evaluate_fn", 1), ("evaluate_fn", 2)]
    # the strategy's Result is kept, and the app still recorded every client in every round and then distilled
    metrics = results["strategy_metrics"]
    assert metrics["evaluate_metrics_serverapp"] == {str(r): {"user-round": r} for r in (0, 1, 2)}
    assert sorted(metrics["evaluate_metrics_clientapp"]) == ["1", "2"]
    assert all(0.0 <= m["accuracy"] <= 1.0 for m in metrics["evaluate_metrics_clientapp"].values())
    assert [r["round"] for r in results["round_history"]] == [1, 2]
    assert all(len(r["global_acc"]) == 4 for r in results["round_history"])
    assert [p["name"] for p in results["phases"]][-2:] == ["rounds", "dsd"] and results["failures"] == []
    assert_accuracies(results["clients"], [0, 1, 2, 3], ["global_acc", "personal_acc"])


def test_the_docs_server_app_example_imports_and_defines_a_server_app():
    page = (ROOT / "docs" / "custom-strategy.md").read_text()
    section = page[page.index("## A server_app.py of your own"):]
    code = section[section.index("```python\n") + len("```python\n"):section.index("```\n\n")]
    namespace: dict[str, object] = {}
    exec(compile(code, "docs/custom-strategy.md", "exec"), namespace)
    assert isinstance(namespace["app"], ServerApp) and callable(namespace["main"])
