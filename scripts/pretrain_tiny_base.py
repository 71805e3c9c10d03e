"""Pre-train the tiny class-conditional diffusion UNet that WarmFed ships as its foundation model.

Trains only on the base fold of digits-domains (`load_digits_domains(16, seed=0).base`), which no
client owns, each batch rendered afresh in random looks of a broad procedural family
(`warmfed_flwr.data.pretraining_looks`: colours, gradients, patterns, textures, strokes, noise) that
excludes the four client styles, so the base has a broad prior, as Stable Diffusion has, and no
client's style. Fixed number of steps from a fixed seed; writes
`warmfed_flwr/assets/tiny-unet/{config.json, diffusion_pytorch_model.safetensors,
scheduler_config.json, pretrain.json}`.

    PYTHONPATH=. .venv/bin/python scripts/pretrain_tiny_base.py

While other torch jobs share the cores, run it with OMP_NUM_THREADS=1: two OpenMP threads per
process thrash under contention (a step took 14 s instead of 1.2 s).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from diffusers import UNet2DModel
from diffusers.optimization import get_cosine_schedule_with_warmup
from diffusers.training_utils import EMAModel

from warmfed_flwr.data.digits_domains import load_digits_domains
from warmfed_flwr.data.pretraining_looks import render_looks
from warmfed_flwr.generative.assets import TINY_ASSET_DIR
from warmfed_flwr.generative.tiny_training import denoising_loss
from warmfed_flwr.generative.tiny_unet import tiny_unet_config, to_model_space, training_scheduler
from warmfed_flwr.learning.training import random_shift

IMAGE_SIZE = 16
MAX_SHIFT = 1
WARMUP_STEPS = 100
LOG_EVERY = 100


def pretrain(steps: int, batch_size: int, lr: float, seed: int, channels: tuple[int, ...]) -> tuple[UNet2DModel, float]:
    """Train the tiny UNet on the base fold in random looks; returns the EMA weights and the mean loss of the last steps."""
    torch.manual_seed(seed)
    looks = torch.Generator().manual_seed(seed)
    digits = load_digits_domains(IMAGE_SIZE, seed=0)
    grey = digits.base.images[:, :1]
    labels = digits.base.labels
    unet = UNet2DModel(**tiny_unet_config(len(digits.class_names), IMAGE_SIZE, channels))
    scheduler = training_scheduler()
    optimizer = torch.optim.AdamW(unet.parameters(), lr=lr)
    learning_rate = get_cosine_schedule_with_warmup(optimizer, WARMUP_STEPS, steps)
    ema = EMAModel(unet.parameters(), use_ema_warmup=True, power=0.75)
    null_label = len(digits.class_names)
    recent: list[float] = []
    unet.train()
    for step in range(1, steps + 1):
        batch = torch.randint(0, grey.shape[0], (batch_size,))
        clean = to_model_space(render_looks(random_shift(grey[batch], MAX_SHIFT), looks), IMAGE_SIZE)
        loss = denoising_loss(unet, scheduler, clean, labels[batch], null_label)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        learning_rate.step()
        ema.step(unet.parameters())
        recent = (recent + [loss.item()])[-LOG_EVERY:]
        if step % LOG_EVERY == 0:
            print(f"step {step}/{steps}  loss {sum(recent) / len(recent):.4f}", flush=True)
    ema.copy_to(unet.parameters())
    return unet.eval(), sum(recent) / len(recent)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=6000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--channels", type=int, nargs="+", default=[32, 64, 96], help="the UNet's block widths")
    parser.add_argument("--out", type=Path, default=TINY_ASSET_DIR)
    args = parser.parse_args()

    started = time.perf_counter()
    unet, final_loss = pretrain(args.steps, args.batch_size, args.lr, args.seed, tuple(args.channels))
    seconds = time.perf_counter() - started
    unet.save_pretrained(args.out, safe_serialization=True)
    training_scheduler().save_config(args.out)
    record = {
        "steps": args.steps,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "seed": args.seed,
        "max_shift": MAX_SHIFT,
        "channels": args.channels,
        "data": f"load_digits_domains({IMAGE_SIZE}, seed=0).base in pretraining_looks.render_looks",
        "seconds": round(seconds, 1),
        "final_loss": round(final_loss, 5),
        "torch_threads": torch.get_num_threads(),
    }
    (args.out / "pretrain.json").write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record))


if __name__ == "__main__":
    main()
