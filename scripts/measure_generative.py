"""Benchmark the tiny diffusion backbone: how faithful, small and fast are the clients' adapters?

For each domain of the configured data (digits-domains, or e.g. `--set data.name=imagefolder --set
data.root=DIR` for a folder of digits in other styles): fit the default LoRA adapter on the domain's train split,
generate images for every class, and measure
- class fidelity: accuracy on the generated images of a small CNN trained on the real train
  images of all domains (the intended digit is recognised; a judge trained on one domain's ~270
  images recognised only 70 % of the real textured test images, too weak to judge by),
- domain fidelity: how often a domain classifier assigns the generated images to this domain; it is
  trained on all domains' real train images and, as a fifth class "none of the clients", on the
  base fold rendered in the base model's own pre-training looks (`pretraining_looks`), so that an
  image in no client's style is not forced into the nearest client domain,
and the same two for the base model without an adapter; adapter bytes vs base bytes, fit steps/s,
generated images/s and that throughput as a fraction of this machine's fp32 matmul peak.
`--full-finetune STEPS` also fine-tunes every weight of the base (the bound any adapter is held
against: a LoRA update is a restricted weight update) with the LoRA fit's loop and batch size.

    PYTHONPATH=. .venv/bin/python scripts/measure_generative.py [--domain inverted] [--set lora.rank=4]
        [--upload-dtypes float32 float16 int8]

Writes one CSV row per (domain, adapter in {lora, base, full-finetune}, guidance) to
benchmarks/generative.csv; `--guidance 1 4` generates from the same adapters at each guidance scale
(default: the configured one).
"""

from __future__ import annotations

import argparse
import copy
import csv
import json
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode
from torchvision.utils import save_image

from warmfed_flwr.config import Settings
from warmfed_flwr.data import load_domain_set
from warmfed_flwr.data.digits_domains import load_digits_domains
from warmfed_flwr.data.images import decoded
from warmfed_flwr.data.types import DomainData, DomainSet, ImageSplit, float_pixels
from warmfed_flwr.data.pretraining_looks import render_looks
from warmfed_flwr.generative import adapter_config, load_backbone, validate_adapter
from warmfed_flwr.generative.base import ClassLabels
from warmfed_flwr.generative.tiny import TinyBackbone
from warmfed_flwr.generative.tiny_training import train_denoiser
from warmfed_flwr.generative.tiny_unet import to_model_space
from warmfed_flwr.generative.upload import encode_adapter

COLUMNS = (
    "domain",
    "adapter",
    "guidance",
    "class_fidelity",
    "domain_fidelity",
    "adapter_bytes",
    "base_bytes",
    "fit_steps_per_s",
    "gen_images_per_s",
    "matmul_peak_fraction",
)
CLASSIFIER_EPOCHS = 30
CLASSIFIER_BATCH = 64
MATMUL_SIZE = 1024
MATMUL_REPEATS = 20
PRETRAINING_LOOK_COPIES = 1  # how many times the base fold is rendered for the judge's "none of the clients" class


@dataclass(frozen=True)
class Row:
    """One CSV row; fit speed is None for the base model, which fits nothing."""

    domain: str
    adapter: str
    guidance: float
    class_fidelity: float
    domain_fidelity: float
    adapter_bytes: int
    base_bytes: int
    fit_steps_per_s: float | None
    gen_images_per_s: float
    matmul_peak_fraction: float

    def as_csv(self) -> dict[str, str]:
        """The row as CSV cells: floats to 4 significant digits, None as an empty cell."""
        return {name: _cell(getattr(self, name)) for name in COLUMNS}


def _cell(value: object) -> str:
    if value is None:
        return ""
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def small_cnn(num_classes: int) -> nn.Module:
    """A three-convolution CNN with batch norm for 16 px RGB images (the judge, not the method's classifier)."""
    return nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1),
        nn.BatchNorm2d(32),
        nn.ReLU(),
        nn.Conv2d(32, 32, 3, padding=1),
        nn.BatchNorm2d(32),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1),
        nn.BatchNorm2d(64),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Dropout(0.3),
        nn.LazyLinear(128),
        nn.ReLU(),
        nn.Linear(128, num_classes),
    )


def shifted(images: torch.Tensor) -> torch.Tensor:
    """The batch moved by up to one pixel (edges repeated), so judges are not fooled by placement."""
    size = images.shape[-1]
    top, left = torch.randint(0, 3, (2,)).tolist()
    return F.pad(images, (1, 1, 1, 1), mode="replicate")[:, :, top : top + size, left : left + size]


def train_judge(images: torch.Tensor, labels: torch.Tensor, num_classes: int, seed: int) -> nn.Module:
    """A small CNN trained with Adam on real images; returned in eval mode."""
    torch.manual_seed(seed)
    model = small_cnn(num_classes)
    model(images[:1])
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(CLASSIFIER_EPOCHS):
        for batch in torch.randperm(len(labels)).split(CLASSIFIER_BATCH):
            loss = F.cross_entropy(model(shifted(images[batch])), labels[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return model.eval()


@torch.no_grad()
def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    """Share of `images` the model assigns to `labels`."""
    return float((model(images).argmax(dim=1) == labels).float().mean())


def matmul_peak_flops() -> float:
    """fp32 FLOP/s of a large square matmul on this machine, best of a few repeats."""
    a, b = torch.randn(MATMUL_SIZE, MATMUL_SIZE), torch.randn(MATMUL_SIZE, MATMUL_SIZE)
    a @ b
    best = float("inf")
    for _ in range(MATMUL_REPEATS):
        started = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - started)
    return 2 * MATMUL_SIZE**3 / best


def flops_per_generated_image(unet: nn.Module, steps: int, guidance: float) -> float:
    """UNet forward FLOPs for one image x sampler steps x 2 when classifier-free guidance runs."""
    size = unet.config.sample_size
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        unet(torch.zeros(1, 3, size, size), torch.tensor([500]), class_labels=torch.tensor([0]))
    return counter.get_total_flops() * steps * (1 if guidance == 1.0 else 2)


def in_memory(data: DomainSet, image_size: int) -> DomainSet:
    """`data` with every split decoded to float32 images in [0, 1] (image folders are read lazily)."""

    def loaded(split: object, where: str) -> ImageSplit:
        images = decoded(split, image_size, where)
        return ImageSplit(float_pixels(images.images), images.labels)

    return DomainSet(
        domains=tuple(
            DomainData(domain.name, loaded(domain.train, f"{domain.name}/train"), loaded(domain.test, f"{domain.name}/test"))
            for domain in data.domains
        ),
        class_names=data.class_names,
    )


def train_domain_judge(data: DomainSet, seed: int) -> nn.Module:
    """The domain judge: one class per domain (its real train images) plus "none of the clients".

    The last class holds digits-domains' base fold (which no client owns) rendered in random
    pre-training looks: the styles the base model knows without any adapter.
    """
    size = data.domains[0].train.images.shape[-1]
    grey = load_digits_domains(size, seed=0).base.images[:, :1].repeat(PRETRAINING_LOOK_COPIES, 1, 1, 1)
    own_looks = render_looks(grey, torch.Generator().manual_seed(seed))
    images = torch.cat([domain.train.images for domain in data.domains] + [own_looks])
    labels = torch.cat(
        [torch.full_like(domain.train.labels, index) for index, domain in enumerate(data.domains)]
        + [torch.full((len(own_looks),), len(data.domains), dtype=torch.long)]
    )
    return train_judge(images, labels, len(data.domains) + 1, seed)


def fit_full_finetune(
    backbone: TinyBackbone, images: torch.Tensor, labels: torch.Tensor, settings: Settings, lr: float, steps: int, seed: int
) -> TinyBackbone:
    """A copy of the tiny base with every weight trained on `images` by the LoRA fit's loop (its batch size)."""
    clean = to_model_space(images, backbone.sample_size)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = copy.deepcopy(backbone.unet).requires_grad_(True)
        fit = replace(settings.lora, lr=lr, steps=steps)
        train_denoiser(unet, backbone.scheduler, clean, labels.long(), fit)
    return TinyBackbone(unet, backbone.scheduler)


def parse_overrides(pairs: list[str]) -> dict[str, object]:
    """KEY=VALUE run-config overrides, values read as JSON where possible (numbers, booleans)."""
    overrides: dict[str, object] = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        try:
            overrides[key] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key] = value
    return overrides


def measure(
    settings: Settings,
    only_domain: str,
    images_per_domain: int,
    guidances: list[float],
    grid_dir: Path | None,
    full_finetune: tuple[int, float] | None = None,
    upload_dtypes: tuple[str, ...] = ("float32",),
) -> list[Row]:
    """Fit, generate and judge every selected domain; rows (lora, base[, full-finetune]) per domain and guidance.

    `full_finetune` = (steps, learning rate) adds the whole-model fine-tune of each domain. Each of `upload_dtypes`
    generates from the adapter as the server decodes it after that upload (`lora` for float32, else `lora-<dtype>`).
    """
    data = in_memory(load_domain_set(settings.data), settings.data.image_size)
    names = [domain.name for domain in data.domains]
    if only_domain and only_domain not in names:
        raise SystemExit(f"--domain {only_domain!r}: not one of {', '.join(names)}")
    num_classes = len(data.class_names)
    real_images = torch.cat([domain.train.images for domain in data.domains])
    class_judge = train_judge(real_images, torch.cat([domain.train.labels for domain in data.domains]), num_classes, settings.seed)
    domain_judge = train_domain_judge(data, settings.seed)
    backbone = load_backbone(settings.lora)
    if full_finetune is not None and not isinstance(backbone, TinyBackbone):
        raise SystemExit("--full-finetune: only for the tiny backbone (lora.backbone='tiny')")
    labels = torch.arange(images_per_domain) % num_classes

    def timed_generate(adapter: object, guidance: float, model: object = backbone) -> tuple[torch.Tensor, float]:
        started = time.perf_counter()
        generate = replace(settings.generate, guidance=guidance)
        wanted = ClassLabels(labels, data.class_names)
        images = model.generate(wanted, adapter, generate, settings.data.image_size, settings.seed)
        return images, len(labels) / (time.perf_counter() - started)

    base = {guidance: timed_generate(None, guidance) for guidance in guidances}
    measured = []
    for index, domain in enumerate(data.domains):
        if only_domain and domain.name != only_domain:
            continue
        real_domain_labels = torch.full_like(domain.test.labels, index)
        print(
            f"{domain.name}: judges on real test images: class {accuracy(class_judge, domain.test.images, domain.test.labels):.3f},"
            f" domain {accuracy(domain_judge, domain.test.images, real_domain_labels):.3f}"
        )
        started = time.perf_counter()
        targets = ClassLabels(domain.train.labels, data.class_names)
        adapter = backbone.fit_lora(domain.train.images, targets, settings.lora, settings.seed + index)
        fit_speed = settings.lora.steps / (time.perf_counter() - started)
        uploads = {}
        for dtype in upload_dtypes:
            agreed = replace(settings.lora, upload_dtype=dtype)
            sent = encode_adapter(adapter, dtype)
            decoded = validate_adapter(sent, adapter_config(agreed), backbone.adapter_shapes(agreed), agreed, domain.name)
            uploads["lora" if dtype == "float32" else f"lora-{dtype}"] = (decoded, sent.nbytes())
        if full_finetune is not None:
            steps, lr = full_finetune
            started = time.perf_counter()
            tuned = fit_full_finetune(backbone, domain.train.images, domain.train.labels, settings, lr, steps, settings.seed + index)
            tuned_speed = steps / (time.perf_counter() - started)
        domain_labels = torch.full_like(labels, index)
        for guidance in guidances:
            by_upload = {name: timed_generate(decoded, guidance) for name, (decoded, _) in uploads.items()}
            variants = [(name, by_upload[name], sent_bytes, fit_speed) for name, (_, sent_bytes) in uploads.items()]
            variants.append(("base", base[guidance], 0, None))
            if full_finetune is not None:
                variants.append(("full-finetune", timed_generate(None, guidance, tuned), tuned.base_bytes(), tuned_speed))
            for name, (generated, speed), bytes_sent, fit in variants:
                class_fidelity = accuracy(class_judge, generated, labels)
                domain_fidelity = accuracy(domain_judge, generated, domain_labels)
                measured.append((domain.name, name, guidance, class_fidelity, domain_fidelity, bytes_sent, fit, speed))
                print(f"{domain.name} {name} guidance {guidance:g}: class {class_fidelity:.3f} domain {domain_fidelity:.3f}", flush=True)
            if grid_dir is not None:
                grid_dir.mkdir(parents=True, exist_ok=True)
                for name, (images, _) in by_upload.items():
                    save_image(images[:100], grid_dir / f"{domain.name}-{name}-g{guidance:g}.png", nrow=num_classes)
    if grid_dir is not None:
        for guidance, (images, _) in base.items():
            save_image(images[:100], grid_dir / f"base-g{guidance:g}.png", nrow=num_classes)
    peak = matmul_peak_flops()
    print(f"matmul peak {peak / 1e9:.1f} GFLOP/s")
    flops = {g: flops_per_generated_image(backbone.unet, settings.generate.steps, g) for g in guidances}
    return [
        Row(domain, name, g, class_fid, domain_fid, sent, backbone.base_bytes(), fit, speed, speed * flops[g] / peak)
        for domain, name, g, class_fid, domain_fid, sent, fit, speed in measured
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--domain", default="", help="measure only this domain")
    parser.add_argument("--images", type=int, default=200, help="generated images per domain")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="run-config override")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/generative.csv"))
    parser.add_argument("--guidance", type=float, nargs="+", help="guidance scales to generate at (default: the configured one)")
    parser.add_argument("--grid-dir", type=Path, default=None, help="also save sample grids (PNG) here")
    parser.add_argument("--full-finetune", type=int, default=0, metavar="STEPS", help="also fine-tune all base weights for STEPS steps")
    parser.add_argument("--upload-dtypes", nargs="+", default=None, choices=("float32", "float16", "int8"),
                        help="generate from the adapter as decoded after each upload dtype (default: the configured one)")
    parser.add_argument("--full-finetune-lr", type=float, default=1e-3, metavar="LR", help="learning rate of --full-finetune")
    args = parser.parse_args()

    settings = Settings.from_run_config(parse_overrides(args.set))
    print(f"lora {settings.lora}\ngenerate {settings.generate}\ntorch threads {torch.get_num_threads()}")
    full_finetune = (args.full_finetune, args.full_finetune_lr) if args.full_finetune > 0 else None
    guidances = args.guidance or [settings.generate.guidance]
    upload_dtypes = tuple(args.upload_dtypes or [settings.lora.upload_dtype])
    rows = measure(settings, args.domain, args.images, guidances, args.grid_dir, full_finetune, upload_dtypes)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(row.as_csv() for row in rows)
    print(f"wrote {len(rows)} rows to {args.out}")


if __name__ == "__main__":
    main()
