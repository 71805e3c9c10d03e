"""Config: defaults agree with pyproject.toml, presets parse, bad values name the key."""

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from flwr.common.config import flatten_dict

from warmfed_flwr.config import DEFAULTS, ConfigError, Settings
from warmfed_flwr.presets import load_preset

ROOT = Path(__file__).resolve().parents[1]


def test_pyproject_declares_exactly_the_defaults():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    declared = dict(flatten_dict(pyproject["tool"]["flwr"]["app"]["config"]))
    assert declared == DEFAULTS


def test_defaults_build_settings():
    s = Settings.from_run_config({})
    assert s.method == "warmfed" and s.rounds == 0
    assert s.data.name == "digits-domains" and s.lora.backbone == "tiny"


def test_pyproject_and_the_configuration_page_are_written_from_the_declared_settings(tmp_path):
    check = [sys.executable, str(ROOT / "scripts" / "write_settings.py"), "--check"]
    assert subprocess.run(check, cwd=ROOT).returncode == 0
    (tmp_path / "docs").mkdir()
    for name in ("pyproject.toml", "docs/configuration.md"):  # a copy whose pyproject.toml no longer matches: named, exit 1
        text = (ROOT / name).read_text()
        (tmp_path / name).write_text(text.replace("rank = 8", "rank = 4") if name == "pyproject.toml" else text)
    stale = subprocess.run([*check, "--root", str(tmp_path)], cwd=ROOT, capture_output=True, text=True)
    assert stale.returncode == 1 and "pyproject.toml is not current" in stale.stderr
    assert "configuration.md" not in stale.stderr
    (tmp_path / "pyproject.toml").write_text((ROOT / "pyproject.toml").read_text())  # and a stale table: named, exit 1
    page = tmp_path / "docs" / "configuration.md"
    page.write_text(page.read_text().replace("| `lora.rank` | `8` |", "| `lora.rank` | `4` |"))
    stale = subprocess.run([*check, "--root", str(tmp_path)], cwd=ROOT, capture_output=True, text=True)
    assert stale.returncode == 1 and "configuration.md is not current" in stale.stderr


@pytest.mark.parametrize("preset", sorted((ROOT / "conf").glob("*.toml")), ids=lambda p: p.name)
def test_every_preset_parses(preset):
    flat = load_preset(preset)
    settings = Settings.from_run_config(flat)
    assert flat and settings.method == flat.get("method", DEFAULTS["method"])
    assert settings.rounds == flat.get("rounds", DEFAULTS["rounds"])


@pytest.mark.parametrize(
    ("override", "fragment"),
    [
        ({"method": "fedsgd"}, "'method'"),
        ({"rounds": -1}, "'rounds'"),
        ({"rounds": 1.5}, "'rounds'"),
        ({"data.image-size": "big"}, "'data.image-size'"),
        ({"dsd.mode": "hard"}, "'dsd.mode'"),
        ({"train.augment-shift": 9}, "'train.augment-shift'"),
        ({"lora.lr": 0.0}, "'lora.lr'"),
        ({"lora.send-label-counts": "maybe"}, "'lora.send-label-counts'"),
        ({"generate.prompt-template": "a photo"}, "'generate.prompt-template'"),
        ({"no-such-key": 1}, "'no-such-key'"),
        ({"method": "fedavg", "rounds": 5, "snapshot-rounds": "1,five"}, "'snapshot-rounds'.*comma-separated"),
        ({"method": "fedavg", "rounds": 5, "snapshot-rounds": "0,2"}, "'snapshot-rounds'.*\\[0\\]"),
        ({"method": "fedavg", "rounds": 5, "snapshot-rounds": "5"}, "'snapshot-rounds'.*\\[5\\]"),
        ({"method": "local", "snapshot-rounds": "1"}, "'snapshot-rounds'.*'local'"),
    ],
)
def test_bad_values_name_the_key(override, fragment):
    with pytest.raises(ConfigError, match=fragment):
        Settings.from_run_config(override)


def test_snapshot_rounds_are_parsed_sorted_and_may_be_round_0_for_the_warm_start_methods():
    assert Settings.from_run_config({"method": "fedprox", "rounds": 50, "snapshot-rounds": "20, 1,5"}).snapshot_rounds == (1, 5, 20)
    assert Settings.from_run_config({"method": "warmfed", "rounds": 5, "snapshot-rounds": "0"}).snapshot_rounds == (0,)
    assert Settings.from_run_config({}).snapshot_rounds == ()


def test_integral_float_and_string_bools_are_accepted():
    s = Settings.from_run_config({"rounds": 5.0, "lora.send-label-counts": "false"})
    assert s.rounds == 5 and s.lora.send_label_counts is False


def test_preset_with_unknown_key_names_it(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[lora]\nrnak = 4\n")
    with pytest.raises(ConfigError, match="lora.rnak"):
        load_preset(bad)
