"""Memorization audit of a finished WarmFed run: do the synthetic images copy training images, and does an
adapter give away which images it was trained on?

    PYTHONPATH=. .venv/bin/python scripts/privacy_audit.py --run RUN_DIR [--out DIR]

Reads the run's synthetic pool (`<run>/artifacts/`), its warm-start model, and, for the membership
attack, its adapters (a run with `keep-adapters=true`, tiny backbone); reads each client's images
where the data set is readable, as `plot_samples.py` does. Per client:

(a) Nearest neighbours. For every synthetic image of the client's share, the distance to its
    nearest training image and to its nearest held-out (test) image of that client, in pixel space
    and in the warm-start classifier's feature space (its last layer's input). The ratio
    d_train / d_test is about 1 for a generator that learned the distribution and falls towards 0
    for copies. Near-copies: synthetic images closer (in pixels) to a training image than the 1st
    percentile of the held-out images' distances to their nearest training image.
(b) Membership inference on the adapter: the denoising loss of the client's training images
    (members) and held-out images (non-members) under its adapter, averaged over fixed noise draws
    (the same for every image); ROC AUC of "lower loss = member" (0.5 = no leakage).

Writes `privacy.json` (per client and averaged) and `closest-pairs.png` (the synthetic/training pairs
closest in pixels, synthetic above, training image below) into `--out` (default `<run>/privacy`).
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import load_file
from sklearn.metrics import roc_auc_score
from torch import nn
from torchvision.utils import save_image

from plot_samples import synthetic_shares
from warmfed_flwr import data
from warmfed_flwr.config import Settings
from warmfed_flwr.data.types import ImageSplit
from warmfed_flwr.generative import load_backbone
from warmfed_flwr.generative.adapter import ADAPTER_FILE
from warmfed_flwr.generative.tiny import TinyBackbone
from warmfed_flwr.generative.tiny_training import denoising_target
from warmfed_flwr.generative.tiny_unet import to_model_space
from warmfed_flwr.learning.models import build_classifier
from warmfed_flwr.run.artifacts import ArtifactCache
from warmfed_flwr.run.checkpoint import ARTIFACTS_DIR

NEAR_COPY_PERCENTILE = 1.0
MEMBERSHIP_DRAWS = 8  # fixed (timestep, noise) draws per image
LOSS_BATCH = 128
CLOSEST_PAIRS = 16


def flat(images: torch.Tensor) -> torch.Tensor:
    """Images as float vectors in [0, 1]."""
    return images.float().flatten(1) / (255.0 if images.dtype == torch.uint8 else 1.0)


def nearest(queries: torch.Tensor, references: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each query's Euclidean distance to its nearest reference, and that reference's index."""
    return torch.cdist(queries, references).min(dim=1)


def copy_statistics(synthetic: torch.Tensor, train: torch.Tensor, test: torch.Tensor) -> dict[str, float]:
    """Distance ratios and the near-copy share of `synthetic` against `train` and held-out `test` (vectors)."""
    to_train, _ = nearest(synthetic, train)
    to_test, _ = nearest(synthetic, test)
    ratio = (to_train / to_test.clamp_min(1e-12)).numpy()
    threshold = float(np.percentile(nearest(test, train)[0].numpy(), NEAR_COPY_PERCENTILE))
    return {
        "ratio_median": float(np.median(ratio)),
        "ratio_p05": float(np.percentile(ratio, 5)),
        "near_copy_threshold": threshold,
        "near_copy_share": float((to_train < threshold).float().mean()),
    }


@torch.no_grad()
def penultimate_features(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """What `model`'s last Linear layer receives for each image: the classifier's own feature space."""
    last = [module for module in model.modules() if isinstance(module, nn.Linear)][-1]
    captured: list[torch.Tensor] = []
    handle = last.register_forward_hook(lambda _module, inputs, _output: captured.append(inputs[0].detach()))
    try:
        model.eval()(flat(images).view(images.shape))
    finally:
        handle.remove()
    return captured[0].flatten(1)


@torch.no_grad()
def denoising_losses(backbone: TinyBackbone, adapter: dict[str, np.ndarray] | None, split: ImageSplit) -> torch.Tensor:
    """Each image's denoising loss under `adapter` (None: the base) with its true label, averaged over fixed draws.

    Draw k adds the same noise at the same timestep (both seeded by k) to every image, so that images
    differ only in how well the model knows them.
    """
    model = backbone.unet if adapter is None else backbone.with_adapter(adapter)
    clean = to_model_space(flat(split.images).view(split.images.shape), backbone.sample_size)
    steps = backbone.scheduler.config.num_train_timesteps
    losses = torch.zeros(len(split))
    for draw in range(MEMBERSHIP_DRAWS):
        generator = torch.Generator().manual_seed(draw)
        noise = torch.randn((1, *clean.shape[1:]), generator=generator)
        timestep = torch.randint(0, steps, (1,), generator=generator)
        for start in range(0, len(split), LOSS_BATCH):
            images = clean[start : start + LOSS_BATCH]
            noises, timesteps = noise.expand_as(images), timestep.expand(len(images))
            noisy = backbone.scheduler.add_noise(images, noises, timesteps)
            prediction = model(noisy, timesteps, class_labels=split.labels[start : start + LOSS_BATCH]).sample
            target = denoising_target(backbone.scheduler, images, noises, timesteps)
            losses[start : start + LOSS_BATCH] += (prediction - target).pow(2).flatten(1).mean(1) / MEMBERSHIP_DRAWS
    return losses


def membership_auc(member_losses: torch.Tensor, non_member_losses: torch.Tensor) -> float:
    """ROC AUC of telling members by their lower loss (0.5: no better than chance)."""
    truth = np.r_[np.ones(len(member_losses)), np.zeros(len(non_member_losses))]
    return float(roc_auc_score(truth, -np.r_[member_losses.numpy(), non_member_losses.numpy()]))


def warm_start_model(run_dir: Path, settings: Settings, num_classes: int) -> nn.Module | None:
    """The classifier the server trained on the synthetic pool, if the run kept it."""
    store = ArtifactCache(run_dir / ARTIFACTS_DIR)
    if not store.model_path("warmstart-train").is_file():
        return None
    model = build_classifier(settings.model.name, num_classes, settings.data.image_size)
    model.load_state_dict({k: torch.from_numpy(v) for k, v in store.load_model("warmstart-train").items()})
    return model


def audit(run_dir: Path, out_dir: Path) -> dict[str, object]:
    """Audit every client of the run; writes privacy.json and closest-pairs.png into `out_dir`."""
    settings = Settings.from_run_config(json.loads((run_dir / "run_config.json").read_text()))
    results = json.loads((run_dir / "results.json").read_text())
    partitions = max(c["partition_id"] for c in results["clients"]) + 1
    backbone = load_backbone(settings.lora) if settings.lora.backbone == "tiny" else None
    classifier, clients, pairs = None, {}, []
    for pid, share in sorted(synthetic_shares(run_dir).items()):
        client = data.load_client_data(settings.data, pid, partitions)
        classifier = classifier or warm_start_model(run_dir, settings, len(client.class_names))
        train, test, synthetic = flat(client.train.images), flat(client.test.images), flat(share.images)
        numbers: dict[str, object] = {"domain": client.domain, "pixels": copy_statistics(synthetic, train, test)}
        if classifier is not None:
            features = [penultimate_features(classifier, s.images) for s in (share, client.train, client.test)]
            numbers["features"] = copy_statistics(*features)
        adapter_file = run_dir / "adapters" / f"partition-{pid}" / ADAPTER_FILE
        if backbone is not None and adapter_file.is_file():
            adapter = load_file(str(adapter_file))
            numbers["membership_auc"] = membership_auc(denoising_losses(backbone, adapter, client.train),
                                                       denoising_losses(backbone, adapter, client.test))
        distance, index = nearest(synthetic, train)
        pairs += [(float(d), share.images[i], client.train.images[int(j)]) for i, (d, j) in enumerate(zip(distance, index))]
        clients[str(pid)] = numbers
    report = {"clients": clients, "averages": averages(clients)}
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "privacy.json").write_text(json.dumps(report, indent=2) + "\n")
    closest = sorted(pairs, key=lambda pair: pair[0])[:CLOSEST_PAIRS]
    grid = [flat(image[None]).view(1, *image.shape) for pair in closest for image in pair[1:]]
    save_image(torch.cat(grid[0::2] + grid[1::2]), out_dir / "closest-pairs.png", nrow=len(closest))
    return report


def averages(clients: dict[str, dict]) -> dict[str, float]:
    """Means over clients of the near-copy shares, median ratios and membership AUCs they have."""
    values: dict[str, list[float]] = {}
    for numbers in clients.values():
        for space in ("pixels", "features"):
            if space in numbers:
                values.setdefault(f"{space}_ratio_median", []).append(numbers[space]["ratio_median"])
                values.setdefault(f"{space}_near_copy_share", []).append(numbers[space]["near_copy_share"])
        if "membership_auc" in numbers:
            values.setdefault("membership_auc", []).append(numbers["membership_auc"])
    return {name: statistics.fmean(found) for name, found in values.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, required=True, help="a finished warmfed/fgl run directory")
    parser.add_argument("--out", type=Path, help="where privacy.json and closest-pairs.png go (default <run>/privacy)")
    args = parser.parse_args()
    report = audit(args.run, args.out or args.run / "privacy")
    print(json.dumps(report["averages"], indent=2))


if __name__ == "__main__":
    main()
