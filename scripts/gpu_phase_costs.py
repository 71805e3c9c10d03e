"""GPU time and memory of each WarmFed phase at a Stable Diffusion preset's own settings.

For each preset named, measures on samples, with a pipeline of Stable Diffusion 1.5's layer sizes
and random weights (nothing is downloaded), at the preset's batch sizes, resolutions and step
counts:

- LoRA fit: `--lora-steps` steps at lora.batch-size and lora.targets (after a 2-step warm-up fit);
- generation: one batch of generate.batch-size images at generate.steps and generate.guidance
  (after a 2-image warm-up);
- classifier: one epoch of the preset's classifier at data.image-size and train.batch-size over
  `--classifier-images` random images, plain (server fine-tuning, FedAvg rounds) and with DSD
  (student and frozen teacher), and evaluation over the same images (each after a warm-up epoch).

It prints, per phase, the measured rate and peak GPU memory and the phase's time projected from
the rate and the preset's counts: LoRA steps per client, images generated per client, server
epochs over the whole synthetic pool (images per client x clients), and, for the client phases
that depend on the size of the client's data, seconds per 1,000 training images. Projections assume
one client on the whole GPU. Phases with the same settings are measured once for all presets.

    PYTHONPATH=. python scripts/gpu_phase_costs.py conf/office-caltech10.toml conf/camelyon17.toml --out F.json
    PYTHONPATH=. python scripts/gpu_phase_costs.py --small conf/camelyon17.toml   # tiny pipeline: CPU is fine

Imports no Flower, Ray or scikit-learn, so it runs on a bare GPU machine.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tomllib
from pathlib import Path
from typing import Any, Callable

import torch

from warmfed_flwr.config import Settings
from warmfed_flwr.data import camelyon17, domainnet, office_caltech10
from warmfed_flwr.data.types import ImageSplit
from warmfed_flwr.generative.base import Adapter, ClassLabels
from warmfed_flwr.generative.stable_diffusion import StableDiffusionBackbone
from warmfed_flwr.learning.dsd import train_personalized
from warmfed_flwr.learning.models import build_classifier
from warmfed_flwr.learning.training import Schedule, evaluate_accuracy, pick_device, train_supervised

# scripts/ is on sys.path when this file runs as a script
from gpu_check import timed
from sd_pipeline_factory import build_sd15_sized_pipeline, build_tiny_pipeline

DOMAINS = {"office-caltech10": len(office_caltech10.DOMAINS), "domainnet": len(domainnet.DOMAINS), "camelyon17": 5}
CLASSES = {"office-caltech10": 10, "domainnet": len(domainnet.FEDBN_CLASSES), "camelyon17": len(camelyon17.CLASS_NAMES)}
SEED = 0
SD_RESOLUTION = 512
SMALL_RESOLUTION = 16


@dataclasses.dataclass(frozen=True)
class Measured:
    """Wall seconds of a measured sample, how many units it covered, and its peak GPU memory."""

    seconds: float
    units: int
    peak_gpu_mib: float | None

    @property
    def per_unit(self) -> float:
        """Seconds per unit (LoRA step, generated image, image-epoch)."""
        return self.seconds / self.units


def measure(device: torch.device, units: int, work: Callable[[], object]) -> Measured:
    """Run `work` once and return its wall time (synchronized on CUDA) and peak GPU memory."""
    with timed(device) as timing:
        work()
    return Measured(timing.seconds, units, timing.peak_gpu_mib)


def preset_settings(path: Path) -> Settings:
    """The settings of a preset file (its two-level TOML tables as dotted run-config keys).

    Not `presets.load_preset`: that flattens with Flower's helper, and the GPU machine has no Flower.
    """
    raw = tomllib.loads(path.read_text())
    flat: dict[str, Any] = {}
    for key, value in raw.items():
        if isinstance(value, dict):
            flat.update({f"{key}.{inner}": item for inner, item in value.items()})
        else:
            flat[key] = value
    settings = Settings.from_run_config(flat)
    if settings.lora.backbone != "stable-diffusion" or settings.data.name not in DOMAINS:
        raise ValueError(f"{path}: not a Stable Diffusion preset of {sorted(DOMAINS)}")
    return settings


def random_split(count: int, classes: int, image_size: int) -> ImageSplit:
    """`count` random images with labels cycling through `classes` (content is irrelevant for timing)."""
    generator = torch.Generator().manual_seed(SEED)
    images = torch.rand(count, 3, image_size, image_size, generator=generator)
    return ImageSplit(images, torch.arange(count) % classes)


def measure_diffusion(
    settings: Settings, sample_steps: int, small: bool, device: torch.device, lora_only: bool = False
) -> dict[str, Measured]:
    """LoRA steps and (unless `lora_only`) generated images at the preset's settings, on a fresh SD 1.5-sized pipeline."""
    pipeline = build_tiny_pipeline(SMALL_RESOLUTION) if small else build_sd15_sized_pipeline(SD_RESOLUTION, device=device)
    backbone = StableDiffusionBackbone(pipeline)
    del pipeline
    class_names = tuple(f"class {index}" for index in range(CLASSES[settings.data.name]))
    split = random_split(4 * len(class_names), len(class_names), settings.data.image_size)
    lora, generate = settings.lora, settings.generate

    def fit(steps: int) -> Adapter:
        return backbone.fit_lora(split.images, ClassLabels(split.labels, class_names), dataclasses.replace(lora, steps=steps), SEED)

    adapter = fit(2)  # the warm-up fit; its adapter serves the generation
    lora_cost = measure(device, sample_steps, lambda: fit(sample_steps))
    if lora_only:
        backbone.release()
        return {"lora_step": lora_cost}
    labels = torch.arange(generate.batch_size) % len(class_names)
    warm_up = dataclasses.replace(generate, steps=2, batch_size=2)
    backbone.generate(ClassLabels(labels[:2], class_names), adapter, warm_up, settings.data.image_size, SEED)
    generate_cost = measure(
        device,
        generate.batch_size,
        lambda: backbone.generate(ClassLabels(labels, class_names), adapter, generate, settings.data.image_size, SEED),
    )
    backbone.release()
    return {"lora_step": lora_cost, "generated_image": generate_cost}


def measure_classifier(settings: Settings, count: int, device: torch.device) -> dict[str, Measured]:
    """One epoch of plain training, of DSD and of evaluation over `count` images, each after a warm-up."""
    train, classes = settings.train, CLASSES[settings.data.name]
    split = random_split(count, classes, settings.data.image_size)
    model = build_classifier(settings.model.name, classes, settings.data.image_size, seed=SEED)
    one_epoch = dataclasses.replace(settings.dsd, epochs=1)

    def supervised() -> None:
        train_supervised(model, split, Schedule(1, train.lr, train.batch_size, SEED, device))

    def distill() -> None:
        train_personalized(model, split, one_epoch, Schedule(1, one_epoch.lr, train.batch_size, SEED, device))

    costs = {}
    for name, work in (("train_image_epoch", supervised), ("dsd_image_epoch", distill)):
        work()
        costs[name] = measure(device, count, work)
    evaluate_accuracy(model, split, device)
    costs["evaluated_image"] = measure(device, count, lambda: evaluate_accuracy(model, split, device))
    return costs


def projections(settings: Settings, costs: dict[str, Measured]) -> dict[str, float]:
    """Each phase's seconds at the preset's counts (client phases per 1,000 training images)."""
    clients = DOMAINS[settings.data.name] * (settings.data.clients_per_domain or 1)  # "auto": one per domain
    pool = settings.generate.images_per_client * clients
    return {
        "lora_s_per_client": settings.lora.steps * costs["lora_step"].per_unit,
        "generate_s_per_client": settings.generate.images_per_client * costs["generated_image"].per_unit,
        "generate_s_all_clients": pool * costs["generated_image"].per_unit,
        "server_train_s": pool * settings.server.epochs * costs["train_image_epoch"].per_unit,
        "round_s_per_1000_images": 1000 * settings.train.local_epochs * costs["train_image_epoch"].per_unit,
        "dsd_s_per_1000_images": 1000 * settings.dsd.epochs * costs["dsd_image_epoch"].per_unit,
        "evaluate_s_per_1000_images": 1000 * costs["evaluated_image"].per_unit,
    }


def measure_presets(
    paths: list[Path], sample_steps: int, classifier_images: int, small: bool, lora_only: bool = False
) -> dict[str, Any]:
    """Measure every preset's phases (shared settings once) and project them (`lora_only`: the LoRA step alone)."""
    device = pick_device()
    diffusion_cache: dict[tuple[object, ...], dict[str, Measured]] = {}
    classifier_cache: dict[tuple[object, ...], dict[str, Measured]] = {}
    presets = {}
    for path in paths:
        settings = preset_settings(path)
        lora, generate = settings.lora, settings.generate
        diffusion_key = (lora.targets, lora.rank, lora.batch_size, generate.batch_size, generate.steps, generate.guidance)
        if diffusion_key not in diffusion_cache:
            diffusion_cache[diffusion_key] = measure_diffusion(settings, sample_steps, small, device, lora_only)
        if lora_only:
            costs = diffusion_cache[diffusion_key]
            presets[path.name] = {"measured": {"lora_step": dataclasses.asdict(costs["lora_step"])},
                                  "projected": {"lora_s_per_client": settings.lora.steps * costs["lora_step"].per_unit}}
            print_preset(path.name, costs, presets[path.name]["projected"])
            continue
        classifier_key = (settings.model.name, settings.train.batch_size, settings.data.image_size,
                          CLASSES[settings.data.name])
        if classifier_key not in classifier_cache:
            classifier_cache[classifier_key] = measure_classifier(settings, classifier_images, device)
        costs = diffusion_cache[diffusion_key] | classifier_cache[classifier_key]
        presets[path.name] = {
            "measured": {name: dataclasses.asdict(cost) | {"per_unit_s": cost.per_unit} for name, cost in costs.items()},
            "projected": projections(settings, costs),
        }
        print_preset(path.name, costs, presets[path.name]["projected"])
    return {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else str(device),
        "pipeline": "tiny" if small else "sd15-sized random weights",
        "lora_sample_steps": sample_steps,
        "classifier_images": classifier_images,
        "presets": presets,
    }


def print_preset(name: str, costs: dict[str, Measured], projected: dict[str, float]) -> None:
    """One block per preset: measured rates with peak memory, then the projected phase times."""
    print(f"== {name}", flush=True)
    for phase, cost in costs.items():
        peak = "-" if cost.peak_gpu_mib is None else f"{cost.peak_gpu_mib:,.0f} MiB"
        print(f"  {phase:<20} {cost.per_unit * 1000:>10.2f} ms/unit over {cost.units:>5}  peak {peak}")
    for phase, seconds in projected.items():
        print(f"  {phase:<28} {seconds:>10.1f}")


def parse_args() -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("presets", nargs="+", type=Path, help="Stable Diffusion preset files (conf/*.toml)")
    parser.add_argument("--lora-steps", type=int, default=30, help="LoRA steps to time per setting")
    parser.add_argument("--classifier-images", type=int, default=1024, help="random images per classifier epoch")
    parser.add_argument("--small", action="store_true", help="tiny pipeline (seconds, CPU is fine)")
    parser.add_argument("--lora-only", action="store_true", help="time the LoRA step alone (e.g. on a CPU)")
    parser.add_argument("--out", type=Path, help="also write the measurements as JSON to this file")
    return parser.parse_args()


def main() -> None:
    """Measure the presets, print them and optionally write them as JSON."""
    args = parse_args()
    result = measure_presets(args.presets, args.lora_steps, args.classifier_images, args.small, args.lora_only)
    print(f"device: {result['device']}; pipeline: {result['pipeline']}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2))
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
