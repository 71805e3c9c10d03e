"""Write the digits in four styles that neither the tiny base's pre-training looks nor digits-domains contain.

    PYTHONPATH=. .venv/bin/python scripts/make_unseen_styles.py --out /tmp/unseen-styles [--size 32]

A check that the app does well on data it was not tuned on: `<style>/<digit>/<n>.png`, read with
`data.name = "imagefolder"`, `data.root = <out>`. The digits are scikit-learn's, outside the base
fold the tiny base was pre-trained on, split between the styles (each image in one style only).
The styles are drawn, not painted, so none is a colour scheme of the pre-training family:

- outline: only the strokes' contours, hollow, in ink on paper;
- halftone: strokes printed as a grid of dots whose size follows the ink, on newsprint;
- neon: a thin bright tube with a wide glow of the same hue on a dark wall;
- emboss: strokes pressed into grey card, seen only as lit and shaded edges.

The same arguments write the same bytes.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from warmfed_flwr.data.digits_domains import base_fold_indices, grey_digits, sklearn_digits
from warmfed_flwr.data.pretraining_looks import gaussian_blur

PAPER = torch.tensor([0.93, 0.9, 0.82]).view(1, 3, 1, 1)
INK = torch.tensor([0.15, 0.25, 0.55]).view(1, 3, 1, 1)
NEWSPRINT = torch.tensor([0.85, 0.84, 0.8]).view(1, 3, 1, 1)
PRINT_BLACK = torch.tensor([0.1, 0.1, 0.12]).view(1, 3, 1, 1)
WALL = torch.tensor([0.08, 0.04, 0.12]).view(1, 3, 1, 1)
NEON = torch.tensor([1.0, 0.3, 0.8]).view(1, 3, 1, 1)
CARD = torch.tensor([0.55, 0.55, 0.55]).view(1, 3, 1, 1)
HALFTONE_PITCH = 4  # pixels between dot centres at 32 px


def outline(grey: torch.Tensor) -> torch.Tensor:
    """Only the contour of each stroke (dilation minus erosion), in blue ink on paper."""
    dilated = F.max_pool2d(grey, 3, stride=1, padding=1)
    eroded = -F.max_pool2d(-grey, 3, stride=1, padding=1)
    edge = (2.0 * (dilated - eroded)).clamp(0.0, 1.0)
    return PAPER + edge * (INK - PAPER)


def halftone(grey: torch.Tensor) -> torch.Tensor:
    """Black dots on a regular grid, each as large as the ink under it, on newsprint."""
    size = grey.shape[-1]
    ink = F.avg_pool2d(grey, HALFTONE_PITCH)  # the ink over each cell
    centres = (torch.arange(size) % HALFTONE_PITCH - (HALFTONE_PITCH - 1) / 2).abs()
    distance = torch.sqrt(centres.view(1, 1, size, 1) ** 2 + centres.view(1, 1, 1, size) ** 2)
    radius = F.interpolate(ink, scale_factor=HALFTONE_PITCH, mode="nearest") * HALFTONE_PITCH * 0.7
    dots = torch.sigmoid(4.0 * (radius - distance))
    return NEWSPRINT + dots * (PRINT_BLACK - NEWSPRINT)


def neon(grey: torch.Tensor) -> torch.Tensor:
    """A thin white-hot core in a wide pink glow on a dark wall."""
    core = (grey - 0.6).clamp(min=0.0) / 0.4
    glow = gaussian_blur(grey, sigma=grey.shape[-1] / 12).clamp(0.0, 1.0)
    image = WALL + glow * (NEON - WALL)
    return image + core * (1.0 - image)


def emboss(grey: torch.Tensor) -> torch.Tensor:
    """Strokes pressed into grey card: light on their upper-left edges, shade on the lower-right."""
    shift = max(1, grey.shape[-1] // 16)
    padded = F.pad(grey, (shift, shift, shift, shift), mode="replicate")
    upper_left = padded[:, :, : -2 * shift, : -2 * shift]
    lower_right = padded[:, :, 2 * shift :, 2 * shift :]
    relief = (lower_right - upper_left) * 0.6
    return CARD + relief


STYLES = {"outline": outline, "halftone": halftone, "neon": neon, "emboss": emboss}


def client_digits(size: int) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """The digits outside the base fold as N x 1 x size x size in [0, 1], their labels and their scikit-learn rows."""
    _, labels = sklearn_digits()
    rows = np.setdiff1d(np.arange(labels.size), base_fold_indices())
    return grey_digits(size)[torch.from_numpy(rows)], labels[rows], rows


def make_unseen_styles(out: Path, size: int, seed: int = 0) -> int:
    """Write every client digit once, in a style drawn from `seed`; returns the number of images."""
    grey, labels, digit_rows = client_digits(size)
    style_of = np.random.default_rng(seed).integers(0, len(STYLES), size=labels.size)
    for style_index, (name, style) in enumerate(STYLES.items()):
        chosen = np.flatnonzero(style_of == style_index)
        styled = style(grey[chosen]).clamp(0.0, 1.0)
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
