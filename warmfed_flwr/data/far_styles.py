"""The four far styles of the digits-far data set: looks outside the tiny base's pre-training family.

digits-domains' styles are colour schemes and textures of filled strokes, close to the looks the
shipped base was pre-trained on (`pretraining_looks`), so the base's prior alone draws them well.
These are drawn, not painted: the base without an adapter assigns none of its samples to any of
them (BENCHMARKS.md, far domains). Each style turns grey digits (N x 1 x S x S in [0, 1]) into
RGB images (N x 3 x S x S in [0, 1]); the drawing is deterministic (`rng` is unused).

- outline: only the strokes' contours, hollow, in ink on paper;
- halftone: strokes printed as a grid of dots whose size follows the ink, on newsprint;
- neon: a thin bright tube with a wide glow of the same hue on a dark wall;
- emboss: strokes pressed into grey card, seen only as lit and shaded edges.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF

from warmfed_flwr.data.digits_styles import Style
from warmfed_flwr.data.pretraining_looks import gaussian_blur

PAPER = torch.tensor([0.93, 0.9, 0.82]).view(1, 3, 1, 1)
INK = torch.tensor([0.15, 0.25, 0.55]).view(1, 3, 1, 1)
NEWSPRINT = torch.tensor([0.85, 0.84, 0.8]).view(1, 3, 1, 1)
PRINT_BLACK = torch.tensor([0.1, 0.1, 0.12]).view(1, 3, 1, 1)
WALL = torch.tensor([0.08, 0.04, 0.12]).view(1, 3, 1, 1)
NEON = torch.tensor([1.0, 0.3, 0.8]).view(1, 3, 1, 1)
CARD = torch.tensor([0.55, 0.55, 0.55]).view(1, 3, 1, 1)
HALFTONE_PITCH = 4  # pixels between dot centres at 32 px
DRAW_SIZE = 32  # the styles are drawn at least this large (a halftone dot grid needs the room), then resized


def outline(grey: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """Only the contour of each stroke (dilation minus erosion), in blue ink on paper."""
    dilated = F.max_pool2d(grey, 3, stride=1, padding=1)
    eroded = -F.max_pool2d(-grey, 3, stride=1, padding=1)
    edge = (2.0 * (dilated - eroded)).clamp(0.0, 1.0)
    return PAPER + edge * (INK - PAPER)


def halftone(grey: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """Black dots on a regular grid, each as large as the ink under it, on newsprint."""
    size = grey.shape[-1]
    ink = F.avg_pool2d(grey, HALFTONE_PITCH)  # the ink over each cell
    centres = (torch.arange(size) % HALFTONE_PITCH - (HALFTONE_PITCH - 1) / 2).abs()
    distance = torch.sqrt(centres.view(1, 1, size, 1) ** 2 + centres.view(1, 1, 1, size) ** 2)
    radius = F.interpolate(ink, scale_factor=HALFTONE_PITCH, mode="nearest") * HALFTONE_PITCH * 0.7
    dots = torch.sigmoid(4.0 * (radius - distance))
    return NEWSPRINT + dots * (PRINT_BLACK - NEWSPRINT)


def neon(grey: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """A thin white-hot core in a wide pink glow on a dark wall."""
    core = (grey - 0.6).clamp(min=0.0) / 0.4
    glow = gaussian_blur(grey, sigma=grey.shape[-1] / 12).clamp(0.0, 1.0)
    image = WALL + glow * (NEON - WALL)
    return image + core * (1.0 - image)


def emboss(grey: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """Strokes pressed into grey card: light on their upper-left edges, shade on the lower-right."""
    shift = max(1, grey.shape[-1] // 16)
    padded = F.pad(grey, (shift, shift, shift, shift), mode="replicate")
    upper_left = padded[:, :, : -2 * shift, : -2 * shift]
    lower_right = padded[:, :, 2 * shift :, 2 * shift :]
    relief = (lower_right - upper_left) * 0.6
    return CARD + relief


def drawn_large(style: Style) -> Style:
    """`style` drawn on the digits enlarged to DRAW_SIZE px and resized back to their own size (antialiased)."""

    def draw(grey: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        size = grey.shape[-1]
        if size >= DRAW_SIZE:
            return style(grey, rng).clamp(0.0, 1.0)
        large = TF.resize(grey, [DRAW_SIZE, DRAW_SIZE], interpolation=InterpolationMode.BILINEAR, antialias=True)
        image = style(large.clamp(0.0, 1.0), rng).clamp(0.0, 1.0)
        return TF.resize(image, [size, size], interpolation=InterpolationMode.BILINEAR, antialias=True).clamp(0.0, 1.0)

    return draw


FAR_STYLES: dict[str, Style] = {
    name: drawn_large(style) for name, style in {"outline": outline, "halftone": halftone, "neon": neon, "emboss": emboss}.items()
}
