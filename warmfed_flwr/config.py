"""Typed, validated settings built from Flower's flat run-config.

Every key here is also declared, with the same default, in `[tool.flwr.app.config]` of
pyproject.toml (a test keeps the two equal). In-process simulation passes an empty run-config,
so `Settings.from_run_config` always starts from `DEFAULTS` and overlays what it is given.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

METHODS = ("warmfed", "fgl", "fedavg", "fedprox", "fedavg-ft", "local", "centralized")
DATASETS = ("digits-domains", "imagefolder", "office-caltech10", "domainnet", "camelyon17", "huggingface", "node-local")
NODE_LOCAL = "node-local"  # data.name of deployments where each SuperNode holds its own folder
MODELS = ("cnn", "resnet18")
PRETRAINED_CHOICES = ("auto", "none")
WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt")
PARTITIONINGS = ("iid", "dirichlet")
AGGREGATIONS = ("fedavg", "fedprox", "fedadam")
BACKBONES = ("tiny", "stable-diffusion")
LORA_TARGETS = ("all", "attention")
DSD_MODES = ("confidence", "constant", "none")

# Where the server writes and what it keeps or records on the way, not the run's own numbers: never sent
# to clients, and free to differ between a run and the run it resumes.
SERVER_ONLY_KEYS = ("output-dir", "cache-dir", "resume", "keep-adapters", "snapshot-rounds", "retries", "retry-wait",
                    "tracking")
TRACKERS = ("none", "tensorboard", "mlflow")
# The methods that can record snapshots, and their earliest snapshot round (0: after the warm start).
SNAPSHOT_FIRST_ROUND = {"warmfed": 0, "fgl": 0, "fedavg": 1, "fedprox": 1, "fedavg-ft": 1}

DEFAULTS: dict[str, bool | int | float | str] = {
    "method": "warmfed",
    "rounds": 0,
    "seed": 0,
    "min-clients": 2,
    "timeout": 900.0,
    "retries": 2,
    "retry-wait": 60.0,
    "output-dir": "",
    "cache-dir": "",
    "resume": "",
    "keep-adapters": False,
    "snapshot-rounds": "",
    "tracking": "none",
    "data.name": "digits-domains",
    "data.root": "",
    "data.image-size": 16,
    "data.clients-per-domain": "auto",
    "data.partitioning": "iid",
    "data.dirichlet-alpha": 0.5,
    "data.test-fraction": 0.25,
    "data.min-train-images": 10,
    "data.classes": "",
    "model.name": "cnn",
    "model.pretrained": "none",
    "train.batch-size": 32,
    "train.lr": 0.05,
    "train.local-epochs": 5,
    "train.local-only-epochs": 30,
    "train.augment-shift": 1,
    "train.proximal-mu": 0.01,
    "train.aggregation": "fedavg",
    "train.server-lr": 0.01,
    "lora.backbone": "tiny",
    "lora.model-path": "",
    "lora.rank": 8,
    "lora.alpha": 8,
    "lora.targets": "all",
    "lora.steps": 300,
    "lora.lr": 0.005,
    "lora.batch-size": 16,
    "lora.max-bytes": 50_000_000,
    "lora.send-label-counts": True,
    "generate.images-per-client": 800,
    "generate.steps": 10,
    "generate.guidance": 1.0,
    "generate.batch-size": 100,
    "generate.prompt-template": "a photo of a {class}",
    "server.epochs": 30,
    "server.round-epochs": 0,
    "dsd.mode": "confidence",
    "dsd.lambda": 1.0,
    "dsd.temperature": 2.0,
    "dsd.epochs": 15,
    "dsd.lr": 0.01,
}


class ConfigError(ValueError):
    """A run-config value is unknown, of the wrong type or out of range."""


AUTO = "auto"
# Keys that take "auto" or a whole number.
AUTO_OR_INT_KEYS = ("data.clients-per-domain",)


def _typed(key: str, value: Any) -> Any:
    """Coerce `value` to the type of the key's default, or raise a ConfigError naming the key."""
    default = DEFAULTS[key]
    if key in AUTO_OR_INT_KEYS:
        if value == AUTO:
            return AUTO
        if isinstance(value, bool) or not (isinstance(value, int) or (isinstance(value, float) and value.is_integer())):
            raise ConfigError(f"config key '{key}': expected \"auto\" or a whole number, got {value!r}")
        return int(value)
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise ConfigError(f"config key '{key}': expected true or false, got {value!r}")
    if isinstance(default, int):
        if isinstance(value, bool) or not (isinstance(value, int) or (isinstance(value, float) and value.is_integer())):
            raise ConfigError(f"config key '{key}': expected an integer, got {value!r}")
        return int(value)
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"config key '{key}': expected a number, got {value!r}")
        return float(value)
    if not isinstance(value, str):
        raise ConfigError(f"config key '{key}': expected a string, got {value!r}")
    return value


class _Reader:
    """Reads validated values out of a merged flat config."""

    def __init__(self, flat: Mapping[str, Any]) -> None:
        self.flat = flat

    def get(self, key: str) -> Any:
        return self.flat[key]

    def choice(self, key: str, allowed: tuple[str, ...]) -> str:
        value = self.flat[key]
        if value not in allowed:
            raise ConfigError(f"config key '{key}': {value!r} is not one of {', '.join(allowed)}")
        return value

    def at_least(self, key: str, low: float) -> Any:
        value = self.flat[key]
        if value < low:
            raise ConfigError(f"config key '{key}': {value!r} must be >= {low}")
        return value

    def positive(self, key: str) -> Any:
        value = self.flat[key]
        if not value > 0:
            raise ConfigError(f"config key '{key}': {value!r} must be > 0")
        return value

    def between(self, key: str, low: float, high: float) -> Any:
        value = self.flat[key]
        if not low <= value <= high:
            raise ConfigError(f"config key '{key}': {value!r} must be between {low} and {high}")
        return value

    def weights(self, key: str) -> str:
        """'auto', 'none' or the path of a weights file (whether it exists is checked where it is loaded)."""
        value = self.flat[key]
        if value not in PRETRAINED_CHOICES and not value.endswith(WEIGHT_SUFFIXES):
            raise ConfigError(
                f"config key '{key}': {value!r} is not auto, none or a path ending in {', '.join(WEIGHT_SUFFIXES)}"
            )
        return value


@dataclass(frozen=True)
class DataSettings:
    """Which data set, how it is sized and how it is split into clients."""

    name: str
    root: str
    image_size: int
    clients_per_domain: int | None  # None: "auto", as many clients as the federation has SuperNodes
    partitioning: str
    dirichlet_alpha: float
    test_fraction: float
    min_train_images: int
    classes: tuple[str, ...]
    seed: int


@dataclass(frozen=True)
class TrainSettings:
    """Classifier training on clients and in FedAvg-style rounds."""

    model: str
    pretrained: str
    batch_size: int
    lr: float
    local_epochs: int
    local_only_epochs: int
    augment_shift: int
    proximal_mu: float
    aggregation: str
    server_lr: float


@dataclass(frozen=True)
class LoraSettings:
    """The client's LoRA fit of the diffusion backbone; rank and targets are agreed with the server."""

    backbone: str
    model_path: str
    rank: int
    alpha: int
    targets: str
    steps: int
    lr: float
    batch_size: int
    max_bytes: int
    send_label_counts: bool


@dataclass(frozen=True)
class GenerateSettings:
    """Server-side generation of the synthetic pool."""

    images_per_client: int
    steps: int
    guidance: float
    batch_size: int
    prompt_template: str


@dataclass(frozen=True)
class DsdSettings:
    """Dynamic self-distillation of the personalized models."""

    mode: str
    lambda0: float
    temperature: float
    epochs: int
    lr: float


@dataclass(frozen=True)
class Settings:
    """All settings of one run."""

    method: str
    rounds: int
    seed: int
    min_clients: int
    timeout: float
    retries: int
    retry_wait: float
    output_dir: str
    cache_dir: str
    resume: str
    keep_adapters: bool
    snapshot_rounds: tuple[int, ...]
    tracking: str
    server_epochs: int
    server_round_epochs: int
    data: DataSettings
    train: TrainSettings
    lora: LoraSettings
    generate: GenerateSettings
    dsd: DsdSettings

    @staticmethod
    def from_run_config(run_config: Mapping[str, Any] | None = None) -> "Settings":
        """Merge `run_config` over DEFAULTS, check every value and build the typed settings."""
        flat = merge_run_config(run_config)
        r = _Reader(flat)
        if "{class}" not in flat["generate.prompt-template"]:
            raise ConfigError("config key 'generate.prompt-template': must contain '{class}'")
        classes = tuple(c.strip() for c in flat["data.classes"].split(",") if c.strip())
        return Settings(
            method=r.choice("method", METHODS),
            rounds=r.between("rounds", 0, 10_000),
            seed=r.at_least("seed", 0),
            min_clients=r.at_least("min-clients", 1),
            timeout=r.positive("timeout"),
            retries=r.between("retries", 0, 100),
            retry_wait=r.at_least("retry-wait", 0.0),
            output_dir=flat["output-dir"],
            cache_dir=flat["cache-dir"],
            resume=flat["resume"],
            keep_adapters=flat["keep-adapters"],
            snapshot_rounds=snapshot_rounds(flat["snapshot-rounds"], flat["method"], flat["rounds"]),
            tracking=r.choice("tracking", TRACKERS),
            server_epochs=r.at_least("server.epochs", 0),
            server_round_epochs=r.at_least("server.round-epochs", 0),
            data=DataSettings(
                name=r.choice("data.name", DATASETS),
                root=flat["data.root"],
                image_size=r.between("data.image-size", 8, 1024),
                clients_per_domain=(
                    None if flat["data.clients-per-domain"] == AUTO else r.between("data.clients-per-domain", 1, 1000)
                ),
                partitioning=r.choice("data.partitioning", PARTITIONINGS),
                dirichlet_alpha=r.positive("data.dirichlet-alpha"),
                test_fraction=r.between("data.test-fraction", 0.01, 0.9),
                min_train_images=r.at_least("data.min-train-images", 1),
                classes=classes,
                seed=flat["seed"],
            ),
            train=TrainSettings(
                model=r.choice("model.name", MODELS),
                pretrained=r.weights("model.pretrained"),
                batch_size=r.between("train.batch-size", 1, 65536),
                lr=r.positive("train.lr"),
                local_epochs=r.at_least("train.local-epochs", 1),
                local_only_epochs=r.at_least("train.local-only-epochs", 1),
                augment_shift=r.between("train.augment-shift", 0, 8),
                proximal_mu=r.at_least("train.proximal-mu", 0.0),
                aggregation=r.choice("train.aggregation", AGGREGATIONS),
                server_lr=r.positive("train.server-lr"),
            ),
            lora=LoraSettings(
                backbone=r.choice("lora.backbone", BACKBONES),
                model_path=flat["lora.model-path"],
                rank=r.between("lora.rank", 1, 512),
                alpha=r.between("lora.alpha", 1, 4096),
                targets=r.choice("lora.targets", LORA_TARGETS),
                steps=r.at_least("lora.steps", 1),
                lr=r.positive("lora.lr"),
                batch_size=r.between("lora.batch-size", 1, 4096),
                max_bytes=r.positive("lora.max-bytes"),
                send_label_counts=flat["lora.send-label-counts"],
            ),
            generate=GenerateSettings(
                images_per_client=r.at_least("generate.images-per-client", 1),
                steps=r.between("generate.steps", 1, 1000),
                guidance=r.at_least("generate.guidance", 1.0),
                batch_size=r.between("generate.batch-size", 1, 4096),
                prompt_template=flat["generate.prompt-template"],
            ),
            dsd=DsdSettings(
                mode=r.choice("dsd.mode", DSD_MODES),
                lambda0=r.at_least("dsd.lambda", 0.0),
                temperature=r.positive("dsd.temperature"),
                epochs=r.at_least("dsd.epochs", 1),
                lr=r.positive("dsd.lr"),
            ),
        )


def snapshot_rounds(value: str, method: str, rounds: int) -> tuple[int, ...]:
    """The sorted rounds of `snapshot-rounds` ("1,5,20"); each must come before the run's last round."""
    try:
        parsed = sorted({int(part) for part in value.split(",") if part.strip()})
    except ValueError:
        raise ConfigError(f"config key 'snapshot-rounds': {value!r} is not a comma-separated list of rounds") from None
    if not parsed:
        return ()
    if method not in SNAPSHOT_FIRST_ROUND:
        raise ConfigError(f"config key 'snapshot-rounds': method {method!r} has no rounds to take snapshots of")
    first = SNAPSHOT_FIRST_ROUND[method]
    outside = [r for r in parsed if not first <= r < rounds]
    if outside:
        raise ConfigError(
            f"config key 'snapshot-rounds': rounds {outside} are not between {first} and rounds - 1 = {rounds - 1}"
        )
    return tuple(parsed)


def merge_run_config(run_config: Mapping[str, Any] | None) -> dict[str, Any]:
    """DEFAULTS overlaid with `run_config`; unknown keys and wrongly typed values raise ConfigError."""
    flat = dict(DEFAULTS)
    for key, value in (run_config or {}).items():
        if key not in DEFAULTS:
            raise ConfigError(f"unknown config key '{key}' (known keys: {', '.join(sorted(DEFAULTS))})")
        flat[key] = _typed(key, value)
    return flat
