"""Nothing lost: every finished phase is checkpointed in the run directory, and a run can resume from it.

When a phase finishes, what it produced is in `<run>/artifacts/` as safetensors (an `ArtifactCache`:
the adapters received in `lora`, the synthetic pool, the global model after the warm start and after
the last finished round), and `<run>/checkpoint.json` lists the finished phases with results.json as
it stood after the last of them. Both are written atomically, the artifacts first.

`resume=<dir>` continues the run of `<dir>`: its saved run_config must equal this run's except for
RESUME_FREE_KEYS; discovery runs again, the recorded results are taken over (their phases marked
`resumed`) and only the phases that had not finished run. Resuming into another `output-dir` copies
the checkpoint there first, so that directory can be resumed in turn.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Callable, Mapping

from flwr.app import ArrayRecord

from warmfed_flwr.config import RESUME_FREE_KEYS, ConfigError
from warmfed_flwr.run.artifacts import ArtifactCache
from warmfed_flwr.run.results import RunRecorder, write_json_atomic
from warmfed_flwr.run.transport import arrays_to_record, record_to_arrays

CHECKPOINT_FILE = "checkpoint.json"
ARTIFACTS_DIR = "artifacts"
RUN_CONFIG_FILE = "run_config.json"
_UNSET = "<not set>"


class ResumeError(ConfigError):
    """`resume` names a directory this run cannot continue."""


def check_resumable(run_dir: Path, run_config: Mapping[str, Any]) -> None:
    """Raise ResumeError unless `run_dir` holds a run whose settings equal `run_config` (RESUME_FREE_KEYS aside)."""
    saved_file = run_dir / RUN_CONFIG_FILE
    if not saved_file.is_file():
        raise ResumeError(f"config key 'resume': {run_dir} is not a run directory (it has no {RUN_CONFIG_FILE})")
    saved = json.loads(saved_file.read_text())
    differing = sorted(
        key for key in saved.keys() | run_config.keys()
        if key not in RESUME_FREE_KEYS and saved.get(key, _UNSET) != run_config.get(key, _UNSET)
    )
    if differing:
        changes = "; ".join(
            f"{key}: {saved.get(key, _UNSET)!r} there, {run_config.get(key, _UNSET)!r} now" for key in differing
        )
        raise ResumeError(
            f"config key 'resume': {run_dir} was run with other settings ({changes}); only "
            f"{', '.join(RESUME_FREE_KEYS)} may differ from the run being resumed"
        )


class Checkpoint:
    """This run's finished phases and their artifacts, under its run directory."""

    def __init__(self, run_dir: Path) -> None:
        self.store = ArtifactCache(run_dir / ARTIFACTS_DIR)
        self.path = run_dir / CHECKPOINT_FILE
        self.finished: list[dict[str, Any]] = []
        self.results: dict[str, Any] | None = None  # results.json after the last finished phase, when resuming
        self.source: ArtifactCache | None = None  # the store of the resumed directory, when it is another one

    @classmethod
    def resume(cls, run_dir: Path, source_dir: Path) -> Checkpoint:
        """The checkpoint of `source_dir`, continued in `run_dir` (copied there first if it is another directory)."""
        checkpoint = cls(run_dir)
        source_file = source_dir / CHECKPOINT_FILE
        if source_dir != run_dir:
            run_dir.mkdir(parents=True, exist_ok=True)
            checkpoint.source = ArtifactCache(source_dir / ARTIFACTS_DIR)
            if checkpoint.source.root.is_dir():
                shutil.copytree(checkpoint.source.root, checkpoint.store.root, dirs_exist_ok=True)
            if source_file.is_file():  # last: the copy counts only once every artifact is in place
                write_json_atomic(checkpoint.path, json.loads(source_file.read_text()))
        if checkpoint.path.is_file():
            saved = json.loads(checkpoint.path.read_text())
            checkpoint.finished, checkpoint.results = saved["finished"], saved["results"]
        return checkpoint

    def entry(self, phase: str) -> dict[str, Any] | None:
        """What was recorded when `phase` last finished, or None if it has not."""
        return next((entry for entry in reversed(self.finished) if entry["phase"] == phase), None)

    def mark(self, phase: str, recorder: RunRecorder, **details: Any) -> None:
        """Record that `phase` finished, once its artifacts are written: checkpoint.json with the results so far."""
        self.finished.append({"phase": phase, **details})
        write_json_atomic(self.path, {"finished": self.finished, "results": recorder.to_dict()})

    def once(self, phase: str, recorder: RunRecorder, work: Callable[[], None]) -> None:
        """Run a phase that leaves no artifact (only results), unless it already finished."""
        if self.entry(phase) is None:
            with recorder.phase(phase):
                work()
            self.mark(phase, recorder)

    def save_model(self, name: str, arrays: ArrayRecord) -> str:
        """Store a global model under `name`; returns the name."""
        self.store.save_model(name, record_to_arrays(arrays))
        return name

    def model(self, name: str) -> ArrayRecord:
        """A global model stored by `save_model`."""
        return arrays_to_record(self.store.load_model(name))

    def drop_model(self, name: str) -> None:
        """Delete a stored global model that is no longer needed (if it exists)."""
        self.store.model_path(name).unlink(missing_ok=True)

    def delete_adapters(self) -> int:
        """Delete the received adapters of this run (and of the run it resumed); returns how many there were."""
        return self.store.delete_adapters() + (self.source.delete_adapters() if self.source else 0)
