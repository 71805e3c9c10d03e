"""Write the digits in four styles that neither the tiny base's pre-training looks nor digits-domains contain.

    PYTHONPATH=. .venv/bin/python scripts/make_unseen_styles.py --out /tmp/unseen-styles [--size 32]

A check that the app does well on data it was not tuned on: `<style>/<digit>/<n>.png`, read with
`data.name = "imagefolder"`, `data.root = <out>`. The digits are scikit-learn's, outside the base
fold the tiny base was pre-trained on, split between the styles (each image in one style only).
The styles are those of the in-memory `digits-far` data set (`warmfed_flwr/data/far_styles.py`:
outline, halftone, neon, emboss); this writes them as files, e.g. to try the image-folder path.

The same arguments write the same bytes.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from warmfed_flwr.data.digits_domains import base_fold_indices, grey_digits, sklearn_digits
from warmfed_flwr.data.far_styles import FAR_STYLES


def client_digits(size: int) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """The digits outside the base fold as N x 1 x size x size in [0, 1], their labels and their scikit-learn rows."""
    _, labels = sklearn_digits()
    rows = np.setdiff1d(np.arange(labels.size), base_fold_indices())
    return grey_digits(size)[torch.from_numpy(rows)], labels[rows], rows


def make_unseen_styles(out: Path, size: int, seed: int = 0) -> int:
    """Write every client digit once, in a style drawn from `seed`; returns the number of images."""
    grey, labels, digit_rows = client_digits(size)
    rng = np.random.default_rng(seed)
    style_of = rng.integers(0, len(FAR_STYLES), size=labels.size)
    for style_index, (name, style) in enumerate(FAR_STYLES.items()):
        chosen = np.flatnonzero(style_of == style_index)
        styled = style(grey[chosen], rng).clamp(0.0, 1.0)
        pixels = (styled * 255.0).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
        for index, image in zip(chosen, pixels):
            folder = out / name / str(labels[index])
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(folder / f"{digit_rows[index]:04d}.png")
    return labels.size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--size", type=int, default=32, help="image side in pixels")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(f"wrote {make_unseen_styles(args.out, args.size, args.seed)} images to {args.out}")


if __name__ == "__main__":
    main()
