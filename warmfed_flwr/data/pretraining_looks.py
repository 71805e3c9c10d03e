"""The broad, procedural family of looks the shipped tiny base model is pre-trained on.

Stable Diffusion already knows photos, paintings, sketches and clip art before any client adapts
it; this family gives the tiny base the same kind of prior over how a digit can look: any legible
foreground and background colour, flat or gradient or low-frequency-noise or patterned
backgrounds, procedural textures, thin to thick and blurred strokes, pixel noise, and three ways of
putting the strokes on the background (painted over, multiplied, differenced).

It deliberately excludes what makes the four digits-domains styles (`digits_styles`): colour pairs
near white-on-black (`clean`), black-on-white (`inverted`) and yellow-on-blue (`thick`) are redrawn,
and no photograph is ever used (`textured` takes its backgrounds from photos). An adapter then has
to move the base to a client's corner of this space, and the base alone draws no client's style.

    looks = render_looks(grey, torch.Generator().manual_seed(0))   # N x 1 x S x S -> N x 3 x S x S
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

# (background, foreground) RGB of the client styles the family keeps away from
EXCLUDED_SCHEMES = torch.tensor(
    [
        [0.0, 0.0, 0.0, 1.0, 1.0, 1.0],  # clean: white strokes on black
        [1.0, 1.0, 1.0, 0.0, 0.0, 0.0],  # inverted: black strokes on white
        [0.1, 0.2, 0.6, 1.0, 0.85, 0.1],  # thick: yellow strokes on blue
    ]
)
EXCLUSION_RADIUS = 0.45  # Euclidean distance in the 6-d (background, foreground) colour space
MIN_CONTRAST = 0.3  # luminance difference between foreground and background, so the digit stays legible
MUTED_SHARE = 0.4  # colour pairs desaturated by a random amount (greys, muted photo-like tones)
LUMINANCE = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)

# shares of the background kinds: flat, gradient, low-frequency noise, stripes/checkers, fractal texture
BACKGROUND_SHARES = torch.tensor([0.35, 0.2, 0.15, 0.15, 0.15])
# shares of the compositions: painted over, multiplied (dark strokes), differenced
COMPOSITION_SHARES = torch.tensor([0.7, 0.1, 0.2])
PATTERNED_FOREGROUND_SHARE = 0.2
NOISY_SHARE = 0.3
MAX_NOISE_STD = 0.08


def render_looks(grey: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Grey digits (N x 1 x S x S in [0, 1], white strokes on black) in random looks: N x 3 x S x S in [0, 1]."""
    if grey.ndim != 4 or grey.shape[1] != 1:
        raise ValueError(f"grey digits must be N x 1 x S x S, got shape {tuple(grey.shape)}")
    count, size = grey.shape[0], grey.shape[-1]
    strokes = stroke_variants(grey, generator)
    background_colour, foreground_colour = colour_pairs(count, generator)
    background = backgrounds(background_colour, size, generator)
    foreground = foregrounds(foreground_colour, size, generator)
    composed = compose(background, foreground, strokes, generator)
    noisy = torch.rand(count, 1, 1, 1, generator=generator) < NOISY_SHARE
    noise_std = torch.rand(count, 1, 1, 1, generator=generator) * MAX_NOISE_STD * noisy
    return (composed + noise_std * torch.randn(composed.shape, generator=generator)).clamp(0.0, 1.0)


def stroke_variants(grey: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Each digit's strokes thinned, kept or thickened, then blurred by a random amount."""
    count = grey.shape[0]
    thick = 0.5 * (grey + F.max_pool2d(grey, kernel_size=3, stride=1, padding=1))
    thin = grey.pow(2)
    choice = torch.randint(0, 3, (count, 1, 1, 1), generator=generator)
    strokes = torch.where(choice == 0, thin, torch.where(choice == 1, grey, thick))
    blur = torch.rand(count, 1, 1, 1, generator=generator) * (torch.rand(count, 1, 1, 1, generator=generator) < 0.4)
    return (1.0 - blur) * strokes + blur * gaussian_blur(strokes, sigma=0.8)


def gaussian_blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """A separable Gaussian blur with replicated edges."""
    radius = max(1, math.ceil(2 * sigma))
    offsets = torch.arange(-radius, radius + 1, dtype=images.dtype)
    kernel = torch.exp(-(offsets**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    channels = images.shape[1]
    padded = F.pad(images, (radius, radius, radius, radius), mode="replicate")
    horizontal = F.conv2d(padded, kernel.view(1, 1, 1, -1).repeat(channels, 1, 1, 1), groups=channels)
    return F.conv2d(horizontal, kernel.view(1, 1, -1, 1).repeat(channels, 1, 1, 1), groups=channels)


def luminance(colours: torch.Tensor) -> torch.Tensor:
    """Luminance of N x 3 colours (or N x 3 x H x W images, per pixel)."""
    weights = LUMINANCE.view(1, 3) if colours.ndim == 2 else LUMINANCE
    return (colours * weights).sum(dim=1)


def colour_pairs(count: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(background, foreground) RGB colours, N x 3 each: legible and away from every excluded scheme."""
    background = torch.rand(count, 3, generator=generator)
    foreground = torch.rand(count, 3, generator=generator)
    saturation = torch.where(
        torch.rand(count, 1, generator=generator) < MUTED_SHARE, torch.rand(count, 1, generator=generator), torch.ones(count, 1)
    )
    for _ in range(100):
        background = desaturated(background, saturation)
        foreground = desaturated(foreground, saturation)
        bad = (luminance(foreground) - luminance(background)).abs() < MIN_CONTRAST
        bad |= torch.cdist(torch.cat([background, foreground], dim=1), EXCLUDED_SCHEMES).min(dim=1).values < EXCLUSION_RADIUS
        if not bad.any():
            return background, foreground
        redraw = int(bad.sum())
        background[bad] = torch.rand(redraw, 3, generator=generator)
        foreground[bad] = torch.rand(redraw, 3, generator=generator)
    raise RuntimeError("could not draw legible colour pairs outside the excluded schemes")


def desaturated(colours: torch.Tensor, saturation: torch.Tensor) -> torch.Tensor:
    """N x 3 colours moved towards their grey (luminance) by 1 - `saturation` (N x 1 in [0, 1])."""
    grey = luminance(colours).unsqueeze(1)
    return grey + saturation * (colours - grey)


def backgrounds(colour: torch.Tensor, size: int, generator: torch.Generator) -> torch.Tensor:
    """N x 3 x S x S backgrounds around each base colour, of a random kind (see BACKGROUND_SHARES)."""
    count = colour.shape[0]
    kind = torch.multinomial(BACKGROUND_SHARES, count, replacement=True, generator=generator).view(count, 1, 1, 1)
    flat = colour.view(count, 3, 1, 1).expand(count, 3, size, size)
    second = shifted_colour(colour, 0.3, generator).view(count, 3, 1, 1)
    mix = torch.stack(
        [
            torch.zeros(count, 1, size, size),
            linear_ramp(count, size, generator),
            smooth_field(count, size, 4, generator),
            periodic_pattern(count, size, generator),
            fractal_texture(count, size, generator),
        ]
    )
    blend = mix.gather(0, kind.view(1, count, 1, 1, 1).expand(1, count, 1, size, size)).squeeze(0)
    return flat + blend * (second - flat)


def foregrounds(colour: torch.Tensor, size: int, generator: torch.Generator) -> torch.Tensor:
    """N x 3 x S x S stroke colours: flat, or (a share of them) a soft pattern around the colour."""
    count = colour.shape[0]
    flat = colour.view(count, 3, 1, 1).expand(count, 3, size, size)
    patterned = torch.rand(count, 1, 1, 1, generator=generator) < PATTERNED_FOREGROUND_SHARE
    second = shifted_colour(colour, 0.25, generator).view(count, 3, 1, 1)
    varied = flat + smooth_field(count, size, 3, generator) * (second - flat)
    return torch.where(patterned, varied, flat)


def compose(background: torch.Tensor, foreground: torch.Tensor, strokes: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Strokes painted over the background, multiplied into it, or differenced with it (per image)."""
    count = background.shape[0]
    kind = torch.multinomial(COMPOSITION_SHARES, count, replacement=True, generator=generator).view(count, 1, 1, 1)
    painted = background * (1.0 - strokes) + foreground * strokes
    multiplied = background * (1.0 - strokes * (1.0 - foreground * 0.3))
    differenced = (background - strokes).abs()
    return torch.where(kind == 0, painted, torch.where(kind == 1, multiplied, differenced))


def shifted_colour(colour: torch.Tensor, amount: float, generator: torch.Generator) -> torch.Tensor:
    """A second colour near each colour (uniform offsets of up to `amount` per channel), clamped to [0, 1]."""
    return (colour + (torch.rand(colour.shape, generator=generator) * 2.0 - 1.0) * amount).clamp(0.0, 1.0)


def linear_ramp(count: int, size: int, generator: torch.Generator) -> torch.Tensor:
    """N x 1 x S x S ramps from 0 to 1 across the image at a random angle."""
    angle = torch.rand(count, 1, 1, 1, generator=generator) * 2 * math.pi
    axis = torch.linspace(-0.5, 0.5, size)
    y, x = axis.view(1, 1, size, 1), axis.view(1, 1, 1, size)
    projected = x * torch.cos(angle) + y * torch.sin(angle)
    return (projected / math.sqrt(0.5) + 1.0) / 2.0


def smooth_field(count: int, size: int, cells: int, generator: torch.Generator) -> torch.Tensor:
    """N x 1 x S x S low-frequency noise in [0, 1]: a `cells` x `cells` random grid upsampled smoothly."""
    grid = torch.rand(count, 1, cells, cells, generator=generator)
    return F.interpolate(grid, size=(size, size), mode="bicubic", align_corners=True).clamp(0.0, 1.0)


def periodic_pattern(count: int, size: int, generator: torch.Generator) -> torch.Tensor:
    """N x 1 x S x S soft stripes (half the images) or checkers at random frequency, angle and phase, in [0, 1]."""
    angle = torch.rand(count, 1, 1, 1, generator=generator) * math.pi
    frequency = 1.5 + torch.rand(count, 1, 1, 1, generator=generator) * 3.0  # periods across the image
    phase = torch.rand(count, 1, 1, 1, generator=generator) * 2 * math.pi
    axis = torch.linspace(0.0, 1.0, size)
    y, x = axis.view(1, 1, size, 1), axis.view(1, 1, 1, size)
    along = torch.sin(2 * math.pi * frequency * (x * torch.cos(angle) + y * torch.sin(angle)) + phase)
    across = torch.sin(2 * math.pi * frequency * (-x * torch.sin(angle) + y * torch.cos(angle)) + phase)
    checkers = torch.rand(count, 1, 1, 1, generator=generator) < 0.5
    wave = torch.where(checkers, along * across, along)
    return (torch.tanh(2.0 * wave) + 1.0) / 2.0


def fractal_texture(count: int, size: int, generator: torch.Generator) -> torch.Tensor:
    """N x 1 x S x S multi-octave value noise in [0, 1] (a procedural texture: stone, cloth, foliage-like)."""
    field = torch.zeros(count, 1, size, size)
    weight_sum = 0.0
    for octave, cells in enumerate((2, 4, 8)):
        weight = 0.6**octave
        field += weight * smooth_field(count, size, cells, generator)
        weight_sum += weight
    field = field / weight_sum
    low = field.amin(dim=(2, 3), keepdim=True)
    high = field.amax(dim=(2, 3), keepdim=True)
    return (field - low) / (high - low + 1e-6)
