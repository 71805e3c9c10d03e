"""Draw docs/digits-domains.png: one sample per digit (columns) for the base fold and each domain (rows)."""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from warmfed_flwr.data.digits_domains import load_digits_domains
from warmfed_flwr.data.types import ImageSplit


def first_of_each_class(split: ImageSplit, num_classes: int) -> list[np.ndarray]:
    """The first image of every class in `split` as H x W x 3 arrays, in class order."""
    samples = []
    for label in range(num_classes):
        (positions,) = (split.labels == label).nonzero(as_tuple=True)
        samples.append(split.images[positions[0]].permute(1, 2, 0).numpy())
    return samples


def plot_domains(output: Path, image_size: int, seed: int) -> None:
    """Write the grid of base + domain samples at `image_size` px to `output`."""
    data = load_digits_domains(image_size, seed)
    rows = [("base", data.base)] + [(domain.name, domain.train) for domain in data.domains]
    num_classes = len(data.class_names)
    figure, axes = plt.subplots(len(rows), num_classes, figsize=(num_classes * 0.9, len(rows) * 0.95))
    for row, (name, split) in enumerate(rows):
        for column, image in enumerate(first_of_each_class(split, num_classes)):
            axis = axes[row, column]
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
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--output", type=Path, default=Path("docs/digits-domains.png"))
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    plot_domains(args.output, args.image_size, args.seed)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
