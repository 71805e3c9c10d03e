"""Clients that lie, for the robustness benchmark only: chosen clients poison their training data before their
normal training, so everything they send (a LoRA adapter, a round's model) is well-formed and fitted on wrong data.

The real ClientApp never poisons: an attack is not a run-config key. The benchmark harness writes a copy of the
app whose `client_app.py` builds `poisoned_client_app(attack)` (`write_poisoned_app`) and runs that copy.

Attacks (`Attack.kind`):
- `label-shift`: every training label moved by one class (y -> y + 1 mod C), the classic consistent flip;
- `label-random`: every training label replaced by a random class (seeded per client);
- `other-domain`: the client's images replaced by as many images of the next domain's training split, with their own
  (true) labels: a client that trains on another task's look.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

import numpy as np
import torch
from flwr.app import Context, Message
from flwr.clientapp import ClientApp

from warmfed_flwr import data
from warmfed_flwr.client.app import HANDLERS, build_client_app
from warmfed_flwr.client.classifier import handle_dsd, handle_fit_round, handle_local
from warmfed_flwr.client.context import DataSource, client_data
from warmfed_flwr.client.lora import handle_lora
from warmfed_flwr.config import NODE_LOCAL, Settings
from warmfed_flwr.data.images import decoded
from warmfed_flwr.data.types import ClientData, ImageSplit, pixels_as

ATTACKS = ("label-shift", "label-random", "other-domain")
POISON_SEED = 33_000  # + partition id: the random labels of `label-random`
TRAINING_HANDLERS = {"train.lora": handle_lora, "train.default": handle_fit_round, "train.local": handle_local,
                     "train.dsd": handle_dsd}
APP_FILES = ("pyproject.toml", "server_app.py", "warmfed_flwr")  # what a copy of the app needs besides client_app.py


@dataclass(frozen=True)
class Attack:
    """Which clients (partition ids) poison their training data, and how."""

    kind: str
    clients: tuple[int, ...]

    def __post_init__(self) -> None:
        if self.kind not in ATTACKS:
            raise ValueError(f"attack {self.kind!r}: unknown (expected one of {', '.join(ATTACKS)})")
        if not self.clients or min(self.clients) < 0:
            raise ValueError(f"attack {self.kind!r}: attacking clients must be partition ids >= 0, got {self.clients}")

    @property
    def label(self) -> str:
        """A short name for tables and folders, e.g. label-shift-p3 or label-random-p3-7 (the attacking partitions)."""
        return f"{self.kind}-p{'-'.join(map(str, self.clients))}"


def poisoned_train(cd: ClientData, attack: Attack, settings: Settings) -> ImageSplit:
    """The training split the attacking client `cd` uses instead of its own (its test split stays untouched)."""
    num_classes = len(cd.class_names)
    if attack.kind == "label-shift":
        return ImageSplit(cd.train.images, (cd.train.labels + 1) % num_classes)
    if attack.kind == "label-random":
        rng = np.random.default_rng(POISON_SEED + cd.partition_id)
        return ImageSplit(cd.train.images, torch.from_numpy(rng.integers(0, num_classes, len(cd.train))).long())
    if settings.data.name == NODE_LOCAL:
        raise ValueError("attack 'other-domain' needs a shared data set (node-local clients see only their own folder)")
    domains = data.load_domain_set(settings.data).domains
    names = [domain.name for domain in domains]
    other = domains[(names.index(cd.domain) + 1) % len(domains)]
    count = min(len(cd.train), len(other.train))
    borrowed = decoded(other.train.subset(np.arange(count)), settings.data.image_size, other.name)
    return ImageSplit(pixels_as(borrowed.float_images(), cd.train.images.dtype), borrowed.labels)


def poisoned_data_source(attack: Attack) -> DataSource:
    """`client_data`, with the attacking clients' training split poisoned."""

    def load(settings: Settings, context: Context, msg: Message) -> ClientData:
        cd = client_data(settings, context, msg)
        if cd.partition_id not in attack.clients:
            return cd
        return replace(cd, train=poisoned_train(cd, attack, settings))

    return load


def poisoned_client_app(attack: Attack) -> ClientApp:
    """The app's ClientApp in which `attack.clients` train on poisoned data in every training handler."""
    source = poisoned_data_source(attack)
    return build_client_app(HANDLERS | {name: partial(handler, load_data=source) for name, handler in TRAINING_HANDLERS.items()})


def write_poisoned_app(project: Path, attack: Attack, out: Path) -> Path:
    """A copy of the app in `out` whose ClientApp is `poisoned_client_app(attack)`; returns `out`."""
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    for name in APP_FILES:
        source = project / name
        if source.is_dir():
            shutil.copytree(source, out / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, out / name)
    (out / "client_app.py").write_text(
        '"""A poisoning experiment\'s ClientApp, written by the benchmark harness (warmfed_flwr/benchmark/poisoning.py)."""\n\n'
        "from warmfed_flwr.benchmark.poisoning import Attack, poisoned_client_app\n\n"
        f"app = poisoned_client_app(Attack(kind={attack.kind!r}, clients={attack.clients!r}))\n"
    )
    return out
