"""Write a seeded `<domain>/<class>/*.jpg` image folder of any size, for scale benchmarks and tests.

    python scripts/make_image_folder.py --out DIR --domains 6 --classes 10 --per-class 100 --size 256

Every class is a fixed glyph of three strokes (lines, arcs, polygons) that each image draws under
its own random rotation, scale, shift and stroke width, so the classes can be learned and no two
images are alike. Every domain has its own look, drawn once from the seed: a background (solid,
gradient, stripes or blotchy noise) in its own colours, a contrasting stroke colour, blur and pixel
noise. The same arguments write the same bytes.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

BACKGROUNDS = ("solid", "gradient", "stripes", "noise")
STROKES_PER_GLYPH = 3
JPEG_QUALITY = 90


@dataclass(frozen=True)
class DomainLook:
    """How every image of one domain looks, whatever its class."""

    background: str
    colours: tuple[tuple[int, int, int], tuple[int, int, int]]
    stroke: tuple[int, int, int]
    blur: float
    noise: float


@dataclass(frozen=True)
class Stroke:
    """One stroke of a class glyph, in unit coordinates around the centre (-0.5..0.5)."""

    kind: str
    points: tuple[tuple[float, float], ...]


def rng_for(*parts: int) -> np.random.Generator:
    """An independent generator for `parts` (seed, domain, class, image ...)."""
    return np.random.default_rng(np.random.SeedSequence(list(parts)))


def colour(rng: np.random.Generator) -> tuple[int, int, int]:
    return tuple(int(value) for value in rng.integers(0, 256, 3))  # type: ignore[return-value]


def luminance(rgb: tuple[int, int, int]) -> float:
    return 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]


def domain_look(seed: int, domain: int) -> DomainLook:
    """Domain `domain`'s look: backgrounds cycle through BACKGROUNDS, colours and blur are random."""
    rng = rng_for(seed, 1, domain)
    first, second = colour(rng), colour(rng)
    background_light = (luminance(first) + luminance(second)) / 2 > 127
    stroke = colour(rng)
    # the stroke must stand out: push its brightness to the far side of the background's
    if background_light and luminance(stroke) > 90:
        stroke = tuple(value // 4 for value in stroke)  # type: ignore[assignment]
    elif not background_light and luminance(stroke) < 165:
        stroke = tuple(255 - (255 - value) // 4 for value in stroke)  # type: ignore[assignment]
    return DomainLook(
        background=BACKGROUNDS[domain % len(BACKGROUNDS)],
        colours=(first, second),
        stroke=stroke,
        blur=float(rng.uniform(0.0, 1.5)),
        noise=float(rng.uniform(0.0, 12.0)),
    )


def class_glyph(seed: int, label: int) -> tuple[Stroke, ...]:
    """Class `label`'s glyph: the same three strokes in every domain."""
    rng = rng_for(seed, 2, label)
    strokes = []
    for _ in range(STROKES_PER_GLYPH):
        kind = str(rng.choice(("line", "arc", "polygon")))
        count = {"line": 2, "arc": 2, "polygon": int(rng.integers(3, 6))}[kind]
        points = tuple((float(x), float(y)) for x, y in rng.uniform(-0.4, 0.4, size=(count, 2)))
        strokes.append(Stroke(kind, points))
    return tuple(strokes)


def background(look: DomainLook, size: int, rng: np.random.Generator) -> np.ndarray:
    """A size x size x 3 float array of the domain's background, varied a little per image."""
    first, second = (np.array(c, dtype=np.float32) for c in look.colours)
    if look.background == "solid":
        mix = np.zeros((size, size, 1), np.float32)
    elif look.background == "gradient":
        angle = rng.uniform(0, 2 * math.pi)
        y, x = np.mgrid[0:size, 0:size] / max(size - 1, 1)
        ramp = (np.cos(angle) * x + np.sin(angle) * y)
        mix = ((ramp - ramp.min()) / max(np.ptp(ramp), 1e-6))[..., None]
    elif look.background == "stripes":
        period = size / rng.uniform(4, 8)
        y, x = np.mgrid[0:size, 0:size]
        mix = (np.sin(2 * math.pi * (x + y) / period + rng.uniform(0, 2 * math.pi)) > 0)[..., None] * 0.6
    else:
        coarse = rng.uniform(0, 1, size=(6, 6)).astype(np.float32)
        mix = np.asarray(Image.fromarray((coarse * 255).astype(np.uint8)).resize((size, size), Image.Resampling.BICUBIC))
        mix = (mix.astype(np.float32) / 255.0)[..., None]
    return first * (1 - mix) + second * mix


def draw_image(glyph: tuple[Stroke, ...], look: DomainLook, size: int, rng: np.random.Generator) -> Image.Image:
    """One image: the glyph under a random rotation, scale, shift and width on the domain's background."""
    pixels = background(look, size, rng)
    canvas = Image.fromarray(pixels.clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(canvas)
    angle = rng.uniform(-0.35, 0.35)
    scale = size * rng.uniform(0.7, 0.95)
    centre = size / 2 + rng.uniform(-0.08, 0.08, size=2) * size
    width = max(1, int(round(size * rng.uniform(0.035, 0.06))))
    rotation = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])

    def place(points: tuple[tuple[float, float], ...]) -> list[tuple[float, float]]:
        moved = np.array(points) @ rotation.T * scale + centre
        return [(float(x), float(y)) for x, y in moved]

    for stroke in glyph:
        points = place(stroke.points)
        if stroke.kind == "line":
            draw.line(points, fill=look.stroke, width=width)
        elif stroke.kind == "polygon":
            draw.line(points + points[:1], fill=look.stroke, width=width, joint="curve")
        else:
            (x0, y0), (x1, y1) = points
            box = (min(x0, x1), min(y0, y1), max(x0, x1) + width, max(y0, y1) + width)
            draw.arc(box, start=0, end=200, fill=look.stroke, width=width)
    if look.blur > 0.2:
        canvas = canvas.filter(ImageFilter.GaussianBlur(look.blur * size / 64))
    noisy = np.asarray(canvas, dtype=np.float32) + rng.normal(0, look.noise, size=(size, size, 3))
    return Image.fromarray(noisy.clip(0, 255).astype(np.uint8))


def make_image_folder(out: Path, domains: int, classes: int, per_class: int, size: int, seed: int = 0) -> int:
    """Write the folder; returns how many images were written."""
    glyphs = [class_glyph(seed, label) for label in range(classes)]
    written = 0
    for domain in range(domains):
        look = domain_look(seed, domain)
        for label, glyph in enumerate(glyphs):
            folder = out / f"domain{domain:02d}" / f"class{label:03d}"
            folder.mkdir(parents=True, exist_ok=True)
            for index in range(per_class):
                image = draw_image(glyph, look, size, rng_for(seed, 3, domain, label, index))
                image.save(folder / f"{index:05d}.jpg", format="JPEG", quality=JPEG_QUALITY)
                written += 1
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="folder to write <domain>/<class>/*.jpg into")
    parser.add_argument("--domains", type=int, required=True)
    parser.add_argument("--classes", type=int, required=True)
    parser.add_argument("--per-class", type=int, required=True, help="images per class and domain")
    parser.add_argument("--size", type=int, required=True, help="image width and height in px")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    for name in ("domains", "classes", "per_class", "size"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    written = make_image_folder(args.out, args.domains, args.classes, args.per_class, args.size, args.seed)
    print(f"wrote {written} images to {args.out}")


if __name__ == "__main__":
    main()
