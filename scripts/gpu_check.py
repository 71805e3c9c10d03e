"""One-GPU check of the whole WarmFed pipeline with a Stable Diffusion 1.5-sized backbone.

Builds a pipeline with Stable Diffusion 1.5's layer sizes and random weights (nothing is
downloaded), then runs every phase for a few steps on random images of two clients: LoRA fit per
client, server generation per client (fp16, batched), the global ResNet-18 trained on the
synthetic pool, and DSD personalization per client. Prints the wall time and the peak GPU memory
of each phase, and the device. The diffusion model is freed before the classifier phases.

    scripts/gpu_check.sh                      # 256 px, LoRA 20 steps, 10 sampler steps, 8 images/class
    scripts/gpu_check.sh --resolution 512 --out outputs/gpu_check.json
    scripts/gpu_check.sh --small              # tiny pipeline and sizes: seconds, runs on a CPU too

Imports only torch, diffusers, peft, transformers, accelerate, safetensors, numpy and this
project (no Flower, Ray or scikit-learn), so it runs on a bare GPU machine.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import torch

from warmfed_flwr.config import Settings
from warmfed_flwr.data.types import ImageSplit
from warmfed_flwr.generative.base import ClassLabels
from warmfed_flwr.generative.stable_diffusion import StableDiffusionBackbone
from warmfed_flwr.learning.dsd import train_personalized
from warmfed_flwr.learning.models import build_classifier
from warmfed_flwr.learning.training import Schedule, pick_device, train_supervised

# scripts/ is on sys.path when this file runs as a script
from sd_pipeline_factory import build_sd15_sized_pipeline, build_tiny_pipeline

CLASS_NAMES = ("airplane", "alarm_clock", "bicycle")
CLIENTS = 2
SEED = 0


@dataclasses.dataclass(frozen=True)
class CheckSizes:
    """How big each phase of the check is."""

    resolution: int
    image_size: int
    images_per_class: int
    lora_steps: int
    lora_batch_size: int
    generate_steps: int
    generate_images_per_class: int
    generate_batch_size: int


FULL = CheckSizes(256, 64, 4, 20, 4, 10, 8, 16)
SMALL = CheckSizes(16, 16, 2, 2, 2, 2, 2, 4)


@dataclasses.dataclass
class Timing:
    """Wall seconds and peak GPU memory (MiB; None off CUDA) of a measured block, set when it ends."""

    seconds: float = 0.0
    peak_gpu_mib: float | None = None


@contextmanager
def timed(device: torch.device) -> Iterator[Timing]:
    """Measure the enclosed block on `device`: wall time synchronized on CUDA, peak memory reset at its start."""
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    timing = Timing()
    start = time.perf_counter()
    yield timing
    if cuda:
        torch.cuda.synchronize()
    timing.seconds = time.perf_counter() - start
    timing.peak_gpu_mib = torch.cuda.max_memory_allocated() / 2**20 if cuda else None


@dataclasses.dataclass
class PhaseTimer:
    """Wall time and peak GPU memory of each phase, in the order they ran."""

    device: torch.device
    rows: list[dict[str, object]] = dataclasses.field(default_factory=list)

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Measure the enclosed block as phase `name` (peak memory reset at its start)."""
        with timed(self.device) as timing:
            yield
        peak = timing.peak_gpu_mib
        row = {"phase": name, "seconds": round(timing.seconds, 3), "peak_gpu_mib": peak}
        self.rows.append(row)
        print(f"{name:<22} {row['seconds']:>9.2f} s  {'-' if peak is None else f'{peak:,.0f} MiB':>12}", flush=True)


def client_images(client: int, sizes: CheckSizes) -> ImageSplit:
    """Random images of every class, tinted per client (content is irrelevant for timing)."""
    generator = torch.Generator().manual_seed(SEED + client)
    count = len(CLASS_NAMES) * sizes.images_per_class
    noise = torch.rand(count, 3, sizes.image_size, sizes.image_size, generator=generator)
    tint = torch.rand(1, 3, 1, 1, generator=generator)
    labels = torch.arange(len(CLASS_NAMES)).repeat_interleave(sizes.images_per_class)
    return ImageSplit((0.5 * noise + 0.5 * tint).float(), labels)


def check_settings(sizes: CheckSizes, targets: str) -> Settings:
    """The run settings of the check: the project's defaults with the check's sizes."""
    return Settings.from_run_config(
        {
            "lora.backbone": "stable-diffusion",
            "lora.targets": targets,
            "lora.steps": sizes.lora_steps,
            "lora.batch-size": sizes.lora_batch_size,
            "generate.steps": sizes.generate_steps,
            "generate.batch-size": sizes.generate_batch_size,
            "model.name": "resnet18",
            "dsd.epochs": 1,
        }
    )


def run_check(sizes: CheckSizes, small: bool, targets: str) -> dict[str, object]:
    """Run every phase once and return the measurements."""
    device = pick_device()
    settings = check_settings(sizes, targets)
    timer = PhaseTimer(device)
    clients = [client_images(client, sizes) for client in range(CLIENTS)]
    with timer.phase("build diffusion"):
        pipeline = (
            build_tiny_pipeline(sizes.resolution)
            if small
            else build_sd15_sized_pipeline(sizes.resolution, device=device)
        )
        backbone = StableDiffusionBackbone(pipeline)
        del pipeline
    adapters = []
    for client, split in enumerate(clients):
        with timer.phase(f"lora client-{client}"):
            labelled = ClassLabels(split.labels, CLASS_NAMES)
            adapters.append(backbone.fit_lora(split.images, labelled, settings.lora, SEED + client))
    labels = torch.arange(len(CLASS_NAMES)).repeat_interleave(sizes.generate_images_per_class)
    synthetic = []
    for client, adapter in enumerate(adapters):
        with timer.phase(f"generate client-{client}"):
            wanted = ClassLabels(labels, CLASS_NAMES)
            images = backbone.generate(wanted, adapter, settings.generate, sizes.image_size, SEED + client)
            synthetic.append(ImageSplit(images, labels.clone()))
    with timer.phase("release diffusion"):
        backbone.release()
        del backbone
    pool = ImageSplit(torch.cat([s.images for s in synthetic]), torch.cat([s.labels for s in synthetic]))
    with timer.phase("global resnet18"):
        global_model = build_classifier("resnet18", len(CLASS_NAMES), sizes.image_size, seed=SEED)
        train_supervised(global_model, pool, Schedule(1, settings.train.lr, settings.train.batch_size, SEED, device))
    for client, split in enumerate(clients):
        with timer.phase(f"dsd client-{client}"):
            schedule = Schedule(settings.dsd.epochs, settings.dsd.lr, settings.train.batch_size, SEED, device)
            train_personalized(global_model, split, settings.dsd, schedule)
    return {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else str(device),
        "pipeline": "tiny" if small else "sd15-sized random weights",
        "sizes": dataclasses.asdict(sizes),
        "lora_targets": targets,
        "adapter_bytes": sum(array.nbytes for array in adapters[0].values()),
        "synthetic_nonfinite_pixels": int((~torch.isfinite(pool.images)).sum()),
        "phases": timer.rows,
    }


def parse_args() -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", action="store_true", help="tiny pipeline and sizes (seconds, CPU is fine)")
    parser.add_argument("--resolution", type=int, choices=(256, 512), default=FULL.resolution, help="diffusion px")
    parser.add_argument("--targets", choices=("all", "attention"), default="all", help="LoRA targets (lora.targets)")
    parser.add_argument("--out", type=Path, help="also write the measurements as JSON to this file")
    return parser.parse_args()


def main() -> None:
    """Run the check, print the table and optionally write it as JSON."""
    args = parse_args()
    sizes = SMALL if args.small else dataclasses.replace(FULL, resolution=args.resolution)
    print(f"{'phase':<22} {'wall':>11}  {'peak GPU':>12}", flush=True)
    result = run_check(sizes, args.small, args.targets)
    print(f"device: {result['device']}; adapter {result['adapter_bytes']:,} bytes; "
          f"non-finite synthetic pixels: {result['synthetic_nonfinite_pixels']}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2))
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
