"""Typed, validated settings built from Flower's flat run-config.

Each key is declared once, in `SETTINGS`; pyproject.toml's `[tool.flwr.app.config]` (what Flower
fuses with a run's overrides into `context.run_config`) is written from it. `Settings.from_run_config`
starts from the declared defaults and overlays what it is given, so a partial config also works.
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

# Where a run writes and what it keeps or records on the way, not the run's own numbers: free to differ
# between a run and the run it resumes.
RESUME_FREE_KEYS = ("output-dir", "cache-dir", "resume", "keep-adapters", "snapshot-rounds", "retries", "retry-wait",
                    "tracking")
TRACKERS = ("none", "tensorboard", "mlflow")
# The methods that can record snapshots, and their earliest snapshot round (0: after the warm start).
SNAPSHOT_FIRST_ROUND = {"warmfed": 0, "fgl": 0, "fedavg": 1, "fedprox": 1, "fedavg-ft": 1}


@dataclass(frozen=True)
class Setting:
    """One run-config key, declared once: its default (which also fixes its type) and what it means.

    pyproject.toml's `[tool.flwr.app.config]` and the README's configuration table are written from
    these declarations by `scripts/write_settings.py` (a test keeps both current).
    """

    key: str
    default: bool | int | float | str
    help: str


SETTINGS: tuple[Setting, ...] = (
    Setting("method", "warmfed", "`warmfed`, `fgl`, `fedavg`, `fedprox`, `fedavg-ft`, `local`, `centralized`"),
    Setting("rounds", 0, "federated rounds (WarmFed/FGL: after the warm start; 0 = one-shot)"),
    Setting("seed", 0, "seeds data splits, initialisation, LoRA fits and generation"),
    Setting("min-clients", 2, "a phase goes on without failed clients while at least this many answer"),
    Setting("timeout", 900.0, "seconds to wait for the replies of one phase or round"),
    Setting("retries", 2, "a client whose reply is lost to the infrastructure (its Ray worker died, its SuperNode went "
            "offline, a message went missing) is asked again with the same message up to this many times per phase; "
            "one that raises, sends a bad adapter or times out is not. Each retry is recorded in results.json "
            "(`retries`)"),
    Setting("retry-wait", 60.0, "seconds an offline SuperNode is given to come back (reconnect, as after a restart by "
            "its supervisor) before its client is counted as failed in that phase"),
    Setting("output-dir", "", "run directory; empty = `outputs/<date>-<time>` under the working directory"),
    Setting("cache-dir", "", "reuse adapters and synthetic pools across runs (keyed by every setting that produces "
            "them); empty = off. Setting it asks to keep the adapters there: they are never deleted"),
    Setting("resume", "", "an earlier run directory to continue from its last finished phase (see "
            "[Resuming a run](#resuming-a-run)); empty = off"),
    Setting("keep-adapters", False, "keep the received adapters in the run directory after the run completes, as "
            "`adapters/partition-<id>/` in the format diffusers / peft open (default: deleted)"),
    Setting("snapshot-rounds", "", "e.g. `\"1,5,20\"`: on the way, also record in results.json (`snapshots`) what a "
            "run stopped after each of these rounds would report, its personalization included (`warmfed`/`fgl`: "
            "round 0 = one-shot; `fedavg`, `fedprox`, `fedavg-ft`: from round 1); the run's own numbers stay as they "
            "are. The benchmark uses it"),
    Setting("tracking", "none", "also `tensorboard` or `mlflow`: record each phase's seconds, each round's accuracy "
            "per client, the final numbers and figures under the run directory (`tensorboard --logdir "
            "<run>/tensorboard`, or `mlflow ui --backend-store-uri sqlite:///<run>/mlflow/mlflow.db`); local files "
            "only, no account. Needs `pip install -e '.[tracking]'`"),
    Setting("data.name", "digits-domains", "also `imagefolder`, `office-caltech10`, `domainnet`, `camelyon17`, "
            "`huggingface`, and `node-local` (deployments: each SuperNode reads its own folder, see "
            "[Deploying on real SuperNodes](#deploying-on-real-supernodes))"),
    Setting("data.root", "", "data folder (or Hugging Face id) for the non-embedded data sets"),
    Setting("data.image-size", 16, "images are resized to this size (px)"),
    Setting("data.clients-per-domain", "auto", "split each domain into K clients; `\"auto\"`: as many clients as "
            "the federation has SuperNodes, domains shared out as evenly as possible (one per domain for the "
            "launcher and `make run`)"),
    Setting("data.partitioning", "iid", "`iid` or `dirichlet` label skew inside a domain"),
    Setting("data.dirichlet-alpha", 0.5, "Dirichlet concentration"),
    Setting("data.test-fraction", 0.25, "test share where a data set has no official split"),
    Setting("data.min-train-images", 10, "a client with fewer training images is an error naming it"),
    Setting("data.classes", "", "comma-separated class subset (image folders, DomainNet)"),
    Setting("model.name", "cnn", "`cnn` (small CNN) or `resnet18`"),
    Setting("model.pretrained", "none", "ResNet-18 initialisation, never downloaded: `none` (seeded random), `auto` "
            "(ImageNet weights if torchvision's `resnet18-f37072fd.pth` is in torch's hub cache, random otherwise) or "
            "a `.safetensors` / `.pth` path; the log says which; no effect on `cnn`"),
    Setting("train.batch-size", 32, "classifier batch size"),
    Setting("train.lr", 0.05, "classifier SGD learning rate (momentum 0.9, cosine schedule)"),
    Setting("train.local-epochs", 5, "epochs per federated round on a client"),
    Setting("train.local-only-epochs", 30, "epochs of the `local` and `centralized` baselines"),
    Setting("train.augment-shift", 1, "every classifier training (clients, server pool, baselines, DSD) moves each "
            "image by up to this many pixels (edges repeated); 0 turns augmentation off"),
    Setting("train.proximal-mu", 0.01, "FedProx mu"),
    Setting("train.aggregation", "fedavg", "rounds' aggregation: `fedavg`, `fedprox`, `fedadam`"),
    Setting("train.server-lr", 0.01, "FedAdam server learning rate"),
    Setting("lora.backbone", "tiny", "`tiny` (shipped) or `stable-diffusion`"),
    Setting("lora.model-path", "", "base model folder or hub id (tiny: empty = the shipped asset)"),
    Setting("lora.rank", 8, "LoRA rank (agreed with the server)"),
    Setting("lora.alpha", 8, "LoRA alpha (agreed with the server)"),
    Setting("lora.targets", "all", "`all` or `attention` (agreed with the server)"),
    Setting("lora.steps", 300, "optimizer steps of the client's LoRA fit"),
    Setting("lora.lr", 0.005, "learning rate of the client's LoRA fit"),
    Setting("lora.batch-size", 16, "batch size of the client's LoRA fit"),
    Setting("lora.max-bytes", 50_000_000, "the server rejects a larger adapter"),
    Setting("lora.send-label-counts", True, "clients report per-class counts with their adapter"),
    Setting("generate.images-per-client", 800, "synthetic images generated from each adapter"),
    Setting("generate.steps", 10, "DDIM steps"),
    Setting("generate.guidance", 1.0, "classifier-free guidance (1.0 = none: half the compute and, measured, the best "
            "global model; see BENCHMARKS.md)"),
    Setting("generate.batch-size", 100, "generation batch"),
    Setting("generate.prompt-template", "a photo of a {class}", "Stable Diffusion class prompt"),
    Setting("server.epochs", 30, "warm-start training epochs on the synthetic pool"),
    Setting("server.round-epochs", 0, "server fine-tuning epochs on the pool after each aggregation"),
    Setting("dsd.mode", "confidence", "`confidence`, `constant`, `none`"),
    Setting("dsd.lambda", 1.0, "DSD distillation weight"),
    Setting("dsd.temperature", 2.0, "DSD temperature"),
    Setting("dsd.epochs", 15, "DSD epochs"),
    Setting("dsd.lr", 0.01, "learning rate of the personalization (DSD and fedavg-ft fine-tuning); lower than "
            "`train.lr` because it starts from a trained model"),
)

DEFAULTS: dict[str, bool | int | float | str] = {setting.key: setting.default for setting in SETTINGS}


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
