"""results.json records what made its numbers: the library versions that move them, Python, the CPU or GPU."""

from __future__ import annotations

import json
from pathlib import Path

from warmfed_flwr.run.results import RunRecorder


def test_every_results_json_says_which_versions_python_and_devices_made_it(tmp_path: Path) -> None:
    RunRecorder(tmp_path, "warmfed", 0, 0, "digits-domains").write()
    environment = json.loads((tmp_path / "results.json").read_text())["environment"]
    assert set(environment["packages"]) == {"torch", "flwr", "ray", "diffusers", "peft", "numpy", "scikit-learn", "pillow"}
    assert environment["packages"]["flwr"].startswith("1.42") and environment["python"].startswith("3.")
    assert environment["cpu"] and isinstance(environment["gpus"], list)
