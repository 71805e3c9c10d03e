"""Draw docs/digits-domains.png: one image per digit (columns) for what the base model knows and for each domain (rows).

    PYTHONPATH=. python scripts/plot_domains.py            # the default 16 px, seed 0

Rows: the held-out base fold in the procedural looks the shipped tiny base was pre-trained on
(`warmfed_flwr/data/pretraining_looks.py`), what the shipped base draws alone (no adapter, the
default generation settings), then the first training image of each digit in every client domain.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch

from warmfed_flwr.config import Settings
from warmfed_flwr.data.digits_domains import load_digits_domains
from warmfed_flwr.data.pretraining_looks import render_looks
from warmfed_flwr.data.types import ImageSplit
from warmfed_flwr.generative import ClassLabels, load_backbone


def first_of_each_class(split: ImageSplit, num_classes: int) -> ImageSplit:
    """The first image of every class in `split`, in class order."""
    rows = torch.stack([(split.labels == label).nonzero(as_tuple=True)[0][0] for label in range(num_classes)])
    return ImageSplit(split.images[rows], split.labels[rows])


def in_pretraining_looks(base: ImageSplit, seed: int) -> torch.Tensor:
    """The base fold's grey digits (white on black) rendered in random looks of the base's pre-training family."""
    grey = base.images.float()[:, :1]
    return render_looks(grey, torch.Generator().manual_seed(seed))


def drawn_by_the_base(class_names: tuple[str, ...], image_size: int, seed: int) -> torch.Tensor:
    """One image per class from the shipped tiny base alone, with the run config's default generation settings."""
    settings = Settings.from_run_config({})
    labels = ClassLabels(torch.arange(len(class_names)), class_names)
    return load_backbone(settings.lora).generate(labels, None, settings.generate, image_size, seed)


def plot_domains(output: Path, image_size: int, seed: int) -> None:
    """Write the grid of base + domain samples at `image_size` px to `output`."""
    data = load_digits_domains(image_size, seed)
    num_classes = len(data.class_names)
    base = first_of_each_class(data.base, num_classes)
    rows = [
        ("base pre-training\nlooks (held-out fold)", in_pretraining_looks(base, seed)),
        ("base model alone\n(no adapter)", drawn_by_the_base(data.class_names, image_size, seed)),
    ] + [(domain.name, first_of_each_class(domain.train, num_classes).images) for domain in data.domains]
    figure, axes = plt.subplots(len(rows), num_classes, figsize=(num_classes * 0.9 + 1.2, len(rows) * 0.95))
    for row, (name, images) in enumerate(rows):
        for column in range(num_classes):
            axis = axes[row, column]
            image: np.ndarray = images[column].float().clamp(0, 1).permute(1, 2, 0).numpy()
            axis.imshow(image, interpolation="nearest")
            axis.set_xticks([])
            axis.set_yticks([])
            if column == 0:
                axis.set_ylabel(name, rotation=0, ha="right", va="center")
            if row == 0:
                axis.set_title(data.class_names[column])
    figure.suptitle(f"digits-domains at {image_size} px (seed {seed})")
    figure.tight_layout()
    output.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(output, dpi=100)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", type=Path, default=Path("docs/digits-domains.png"))
    parser.add_argument("--image-size", type=int, default=Settings.from_run_config({}).data.image_size)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    plot_domains(args.output, args.image_size, args.seed)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
