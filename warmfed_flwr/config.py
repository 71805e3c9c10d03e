"""Every run-config setting, declared once, and the typed, validated settings built from Flower's run config.

Each setting is a field of the dataclasses below (`setting(default, help, check)`), its key the
section and the field name in kebab-case (`Settings.data.image_size` is `data.image-size`;
`dsd.lambda_` is `dsd.lambda`). `SETTINGS`, `DEFAULTS`, the validation and its error texts are
derived from the fields; pyproject.toml's `[tool.flwr.app.config]` (which Flower fuses with a
run's overrides into `context.run_config`) and the table of docs/configuration.md are written from them by
`scripts/write_settings.py`. `Settings.from_run_config` starts from the defaults and overlays
what it is given, so a partial config also works.
"""

from __future__ import annotations

from dataclasses import Field, dataclass, fields, is_dataclass
from typing import Any, Mapping, get_type_hints

from warmfed_flwr.setting_checks import (
    AUTO,
    ConfigError,
    at_least,
    auto_or_between,
    auto_or_int,
    between,
    comma_list,
    contains,
    copied_from,
    one_of,
    positive,
    setting,
    typed,
    weights_file,
)

METHODS = ("warmfed", "fgl", "fedavg", "fedprox", "fedavg-ft", "fedbn", "ditto", "local", "centralized")
# Personalized methods whose personal model is trained during the rounds and kept in the node's state.
PERSONAL_IN_ROUNDS = ("fedbn", "ditto")
BATCH_NORM_MODELS = ("cnn-bn", "resnet18")
DATASETS = ("digits-domains", "digits-far", "imagefolder", "office-caltech10", "domainnet", "camelyon17", "huggingface", "node-local")
NODE_LOCAL = "node-local"  # data.name of deployments where each SuperNode holds its own folder
TRACKERS = ("none", "tensorboard", "mlflow")
# Where a run writes and what it keeps or records on the way, not the run's own numbers: free to differ
# between a run and the run it resumes.
RESUME_FREE_KEYS = ("output-dir", "cache-dir", "resume", "keep-adapters", "snapshot-rounds", "retries", "retry-wait",
                    "tracking", "evaluate-others")
# The methods that can record snapshots, and their earliest snapshot round (0: after the warm start).
SNAPSHOT_FIRST_ROUND = {"warmfed": 0, "fgl": 0, "fedavg": 1, "fedprox": 1, "fedavg-ft": 1, "fedbn": 1, "ditto": 1}


@dataclass(frozen=True)
class DataSettings:
    """Which data set, how it is sized and how it is split into clients."""

    name: str = setting("digits-domains", "also `digits-far` (the same digits in styles far from the tiny base's "
                        "prior), `imagefolder`, `office-caltech10`, `domainnet`, `camelyon17`, "
                        "`huggingface`, and `node-local` (deployments: each SuperNode reads its own folder, see "
                        "[Deploying on real SuperNodes](deployment.md))", one_of(*DATASETS))
    root: str = setting("", "data folder (or Hugging Face id) for the non-embedded data sets")
    image_size: int = setting(16, "images are resized to this size (px)", between(8, 1024))
    clients_per_domain: int | None = setting(
        AUTO, "split each domain into K clients; `\"auto\"`: as many clients as the federation has SuperNodes, "
        "domains shared out as evenly as possible (one per domain for the launcher and `make run`)",
        auto_or_between(1, 1000), auto_or_int)
    partitioning: str = setting("iid", "`iid` or `dirichlet` label skew inside a domain", one_of("iid", "dirichlet"))
    dirichlet_alpha: float = setting(0.5, "Dirichlet concentration", positive)
    test_fraction: float = setting(0.25, "test share where a data set has no official split", between(0.01, 0.9))
    min_train_images: int = setting(10, "a client with fewer training images is an error naming it", at_least(1))
    classes: tuple[str, ...] = setting("", "comma-separated class subset (image folders, DomainNet)", parse=comma_list)
    seed: int = copied_from("seed")


@dataclass(frozen=True)
class ModelSettings:
    """The classifier every method trains."""

    name: str = setting("cnn", "`cnn` (small CNN with GroupNorm), `cnn-bn` (the same with BatchNorm, for "
                        "`fedbn`) or `resnet18`", one_of("cnn", "cnn-bn", "resnet18"))
    pretrained: str = setting(
        "none", "ResNet-18 initialisation, never downloaded: `none` (seeded random), `auto` (ImageNet weights if "
        "torchvision's `resnet18-f37072fd.pth` is in torch's hub cache, random otherwise) or a `.safetensors` / "
        "`.pth` path; the log says which; no effect on `cnn`", weights_file(("auto", "none"), (".safetensors", ".pth", ".pt")))


@dataclass(frozen=True)
class TrainSettings:
    """Classifier training on clients and in FedAvg-style rounds."""

    batch_size: int = setting(32, "classifier batch size", between(1, 65536))
    lr: float = setting(0.05, "classifier SGD learning rate (momentum 0.9, cosine schedule)", positive)
    local_epochs: int = setting(5, "epochs per federated round on a client", at_least(1))
    local_only_epochs: int = setting(30, "epochs of the `local` and `centralized` baselines", at_least(1))
    augment_shift: int = setting(1, "every classifier training (clients, server pool, baselines, DSD) moves each image "
                                 "by up to this many pixels (edges repeated); 0 turns augmentation off", between(0, 8))
    proximal_mu: float = setting(0.01, "FedProx mu", at_least(0.0))
    ditto_lambda: float = setting(0.1, "Ditto: pull of each personal model towards the global model", at_least(0.0))
    aggregation: str = setting("fedavg", "rounds' aggregation: `fedavg`, `fedprox`, `fedadam`, and the robust "
                               "`fedmedian` (coordinate-wise median) and `fedtrimmedavg` (mean without the "
                               "`train.trim-fraction` largest and smallest values of each coordinate)",
                               one_of("fedavg", "fedprox", "fedadam", "fedmedian", "fedtrimmedavg"))
    trim_fraction: float = setting(0.2, "FedTrimmedAvg: share cut from each end of every coordinate", between(0.0, 0.49))
    server_lr: float = setting(0.01, "FedAdam server learning rate", positive)


@dataclass(frozen=True)
class LoraSettings:
    """The client's LoRA fit of the diffusion backbone; rank and targets are agreed with the server."""

    backbone: str = setting("tiny", "`tiny` (shipped) or `stable-diffusion`", one_of("tiny", "stable-diffusion"))
    model_path: str = setting("", "base model folder or hub id (tiny: empty = the shipped asset)")
    rank: int = setting(8, "LoRA rank (agreed with the server)", between(1, 512))
    alpha: int = setting(8, "LoRA alpha (agreed with the server)", between(1, 4096))
    targets: str = setting("all", "`all` or `attention` (agreed with the server)", one_of("all", "attention"))
    steps: int = setting(300, "optimizer steps of the client's LoRA fit", at_least(1))
    lr: float = setting(0.005, "learning rate of the client's LoRA fit", positive)
    batch_size: int = setting(16, "batch size of the client's LoRA fit", between(1, 4096))
    max_bytes: int = setting(50_000_000, "the server rejects a larger adapter (bytes as sent)", positive)
    upload_dtype: str = setting("int8", "how the adapter travels: `float32`, `float16` (half the bytes) or `int8` "
                                "(a quarter: 8-bit values with one float32 scale per rank component; decoded on "
                                "the server)", one_of("float32", "float16", "int8"))
    send_label_counts: bool = setting(True, "clients report per-class counts with their adapter (exact counts: "
                                      "refused together with `lora.dp-epsilon`)")
    dp_epsilon: float = setting(0.0, "differentially private adapters: the client fits its LoRA layers by DP-SGD "
                                "(Opacus: per-sample clipping and Gaussian noise, calibrated to this epsilon over "
                                "the fit's steps); 0 = off. The class embedding is then not adapted", at_least(0.0))
    dp_delta: float = setting(1e-5, "the delta of the adapters' (epsilon, delta) guarantee", between(1e-12, 0.1))
    dp_max_grad_norm: float = setting(1.0, "DP-SGD: each image's gradient is clipped to this norm", positive)

    def __post_init__(self) -> None:
        if self.dp_epsilon > 0 and self.send_label_counts:
            raise ConfigError("config key 'lora.send-label-counts': exact per-class counts are not covered by the "
                              "adapters' differential privacy ('lora.dp-epsilon' > 0); set it to false")


@dataclass(frozen=True)
class GenerateSettings:
    """Server-side generation of the synthetic pool."""

    images_per_client: int = setting(800, "synthetic images generated from each adapter", at_least(1))
    steps: int = setting(10, "DDIM steps", between(1, 1000))
    guidance: float = setting(1.0, "classifier-free guidance (1.0 = none: half the compute and, measured, the best "
                              "global model; see BENCHMARKS.md)", at_least(1.0))
    batch_size: int = setting(100, "generation batch", between(1, 4096))
    prompt_template: str = setting("a photo of a {class}", "Stable Diffusion class prompt", contains("{class}"))


@dataclass(frozen=True)
class ServerSettings:
    """The server's own training of the global model on the synthetic pool, and the check of what goes into it."""

    epochs: int = setting(30, "warm-start training epochs on the synthetic pool", at_least(0))
    round_epochs: int = setting(0, "server fine-tuning epochs on the pool after each aggregation", at_least(0))
    share_check: str = setting(
        "off", "WarmFed: before pooling, score each client's synthetic share by how well a classifier trained on the "
        "other clients' shares agrees with its labels; `report` records and logs a share scoring below "
        "`server.share-check-ratio` x the median score, `enforce` also leaves it out of the pool; `off` skips the check",
        one_of("off", "report", "enforce"))
    share_check_ratio: float = setting(0.5, "a share is flagged when its agreement is below this share of the median "
                                       "client's", between(0.0, 1.0))
    share_check_epochs: int = setting(10, "epochs of each classifier the share check trains", at_least(1))
    share_check_folds: int = setting(5, "the share check trains this many classifiers, each without one group of "
                                     "clients (fewer when there are fewer clients)", between(2, 100))


@dataclass(frozen=True)
class DsdSettings:
    """Dynamic self-distillation of the personalized models."""

    mode: str = setting("confidence", "`confidence`, `constant`, `none`", one_of("confidence", "constant", "none"))
    lambda_: float = setting(1.0, "DSD distillation weight", at_least(0.0))
    temperature: float = setting(2.0, "DSD temperature", positive)
    epochs: int = setting(15, "DSD epochs", at_least(1))
    lr: float = setting(0.01, "learning rate of the personalization (DSD and fedavg-ft fine-tuning); lower than "
                        "`train.lr` because it starts from a trained model", positive)
    teacher: str = setting("global", "`global` (the global model) or `global-or-self`: per sample, whichever of the "
                           "global model and the student's own running average gives the true label the higher "
                           "probability", one_of("global", "global-or-self"))
    synthetic_share: bool = setting(False, "WarmFed/FGL: the server sends each client its own share of the synthetic "
                                    "pool (the images generated from its adapter) with the global model, and DSD trains "
                                    "on it next to the client's data; counted in the bytes down")
    validation_fraction: float = setting(
        0.0, "personalization first trains on the client's images less this share of each class (rounded down) and "
        "scores every epoch on that share (mean cross-entropy); it then trains on all images for as many epochs as scored "
        "best, or keeps the global model when no epoch's loss was below its own; 0 = train on every image for `dsd.epochs`", between(0.0, 0.5))


def snapshot_rounds(value: str) -> tuple[int, ...]:
    """The sorted rounds of `snapshot-rounds` ("1,5,20"); checked against the method and rounds in `Settings`."""
    try:
        return tuple(sorted({int(part) for part in value.split(",") if part.strip()}))
    except ValueError:
        raise ConfigError(f"config key 'snapshot-rounds': {value!r} is not a comma-separated list of rounds") from None


@dataclass(frozen=True)
class Settings:
    """All settings of one run."""

    method: str = setting("warmfed", "`warmfed`, `fgl`, `fedavg`, `fedprox`, `fedavg-ft`, `fedbn`, `ditto`, `local`, "
                          "`centralized`",
                          one_of(*METHODS))
    rounds: int = setting(0, "federated rounds (WarmFed/FGL: after the warm start; 0 = one-shot)", between(0, 10_000))
    seed: int = setting(0, "seeds data splits, initialisation, LoRA fits and generation", at_least(0))
    min_clients: int = setting(2, "a phase goes on without failed clients while at least this many answer", at_least(1))
    timeout: float = setting(900.0, "seconds to wait for the replies of one phase or round", positive)
    retries: int = setting(
        2, "a client whose reply is lost to the infrastructure (its Ray worker died, its SuperNode went offline, a "
        "message went missing) is asked again with the same message up to this many times per phase; one that "
        "raises, sends a bad adapter or times out is not. Each retry is recorded in results.json (`retries`)",
        between(0, 100))
    retry_wait: float = setting(60.0, "seconds an offline SuperNode is given to come back (reconnect, as after a "
                                "restart by its supervisor) before its client is counted as failed in that phase",
                                at_least(0.0))
    output_dir: str = setting("", "run directory; empty = `outputs/<date>-<time>` under the working directory")
    cache_dir: str = setting("", "reuse adapters and synthetic pools across runs (keyed by every setting that "
                             "produces them); empty = off. Setting it asks to keep the adapters there: they are "
                             "never deleted")
    resume: str = setting("", "an earlier run directory to continue from its last finished phase (see "
                          "[Resuming a run](running.md#resuming-a-run)); empty = off")
    keep_adapters: bool = setting(False, "keep the received adapters in the run directory after the run completes, "
                                  "as `adapters/partition-<id>/` in the format diffusers / peft open (default: deleted)")
    snapshot_rounds: tuple[int, ...] = setting(
        "", "e.g. `\"1,5,20\"`: on the way, also record in results.json (`snapshots`) what a run stopped after each "
        "of these rounds would report, its personalization included (`warmfed`/`fgl`: round 0 = one-shot; "
        "`fedavg`, `fedprox`, `fedavg-ft`: from round 1); the run's own numbers stay as they are. The benchmark "
        "uses it", parse=snapshot_rounds)
    tracking: str = setting(
        "none", "also `tensorboard` or `mlflow`: record each phase's seconds, each round's accuracy per client, the "
        "final numbers and figures under the run directory (`tensorboard --logdir <run>/tensorboard`, or `mlflow ui "
        "--backend-store-uri sqlite:///<run>/mlflow/mlflow.db`); local files only, no account. Needs `pip install -e "
        "'.[tracking]'`", one_of(*TRACKERS))
    evaluate_others: int = setting(
        0, "resilience: each personalized model is also evaluated on the test splits of up to this many other "
        "clients (the next ones in partition order), reported as `personal_acc_others`; evaluation traffic, not "
        "counted in the bytes. 0 = off, the default: the personalized models, trained on each client's own data, "
        "then travel to other clients, which a real deployment may not allow (the label-skew preset and the "
        "personalization matrix set 3)", between(0, 10_000))
    data: DataSettings = None  # type: ignore[assignment]  # sections: filled by from_run_config
    model: ModelSettings = None  # type: ignore[assignment]
    train: TrainSettings = None  # type: ignore[assignment]
    lora: LoraSettings = None  # type: ignore[assignment]
    generate: GenerateSettings = None  # type: ignore[assignment]
    server: ServerSettings = None  # type: ignore[assignment]
    dsd: DsdSettings = None  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.method == "fedbn" and self.model is not None and self.model.name not in BATCH_NORM_MODELS:
            raise ConfigError(f"config key 'method': fedbn keeps the batch-norm layers local, but 'model.name' = "
                              f"{self.model.name!r} has none; use {' or '.join(BATCH_NORM_MODELS)}")
        if self.snapshot_rounds:
            if self.method not in SNAPSHOT_FIRST_ROUND:
                raise ConfigError(f"config key 'snapshot-rounds': method {self.method!r} has no rounds to take snapshots of")
            first = SNAPSHOT_FIRST_ROUND[self.method]
            outside = [r for r in self.snapshot_rounds if not first <= r < self.rounds]
            if outside:
                raise ConfigError(f"config key 'snapshot-rounds': rounds {outside} are not between {first} and "
                                  f"rounds - 1 = {self.rounds - 1}")

    @staticmethod
    def from_run_config(run_config: Mapping[str, Any] | None = None) -> Settings:
        """Merge `run_config` over the defaults, check every value and build the typed settings."""
        return _build(Settings, "", merge_run_config(run_config))


@dataclass(frozen=True)
class Setting:
    """One declared key, as pyproject.toml and docs/configuration.md list it."""

    key: str
    default: bool | int | float | str
    help: str


def _key(section: str, item: Field) -> str:
    name = item.metadata.get("key") or item.name.rstrip("_").replace("_", "-")
    return f"{section}.{name}" if section else name


def _declared(cls: type, section: str = "") -> list[tuple[str, Field]]:
    """(key, field) of every setting of `cls` and its sections, in declared order (top-level keys first)."""
    own = [(_key(section, f), f) for f in fields(cls) if "default" in f.metadata]
    hints = get_type_hints(cls)
    nested = [entry for f in fields(cls) if is_dataclass(hints[f.name]) for entry in _declared(hints[f.name], f.name)]
    return own + nested


def _build(cls: type, section: str, flat: Mapping[str, Any]) -> Any:
    """An instance of `cls` from the merged flat config: each value checked, parsed, sections built in turn."""
    hints, values = get_type_hints(cls), {}
    for item in fields(cls):
        if is_dataclass(hints[item.name]):
            values[item.name] = _build(hints[item.name], item.name, flat)
        elif "copy" in item.metadata:
            values[item.name] = flat[item.metadata["copy"]]
        else:
            key, value = _key(section, item), flat[_key(section, item)]
            problem = item.metadata["check"](value) if item.metadata["check"] else None
            if problem:
                raise ConfigError(f"config key '{key}': {problem}")
            values[item.name] = item.metadata["parse"](value) if item.metadata["parse"] else value
    return cls(**values)


SETTINGS: tuple[Setting, ...] = tuple(
    Setting(key, item.metadata["default"], item.metadata["help"]) for key, item in _declared(Settings)
)
DEFAULTS: dict[str, bool | int | float | str] = {s.key: s.default for s in SETTINGS}


def merge_run_config(run_config: Mapping[str, Any] | None) -> dict[str, Any]:
    """DEFAULTS overlaid with `run_config`; unknown keys and wrongly typed values raise ConfigError."""
    flat = dict(DEFAULTS)
    for key, value in (run_config or {}).items():
        if key not in DEFAULTS:
            raise ConfigError(f"unknown config key '{key}' (known keys: {', '.join(sorted(DEFAULTS))})")
        flat[key] = typed(key, DEFAULTS[key], value)
    return flat
