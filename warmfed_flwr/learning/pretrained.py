"""ImageNet weights for the ResNet-18 classifier, read from local files only: nothing is downloaded.

`model.pretrained` is "none" (random init), "auto" (torchvision's IMAGENET1K_V1 checkpoint when it
is already in torch's hub cache, random init otherwise) or the path of a `.safetensors` file or a
`.pth` / `.pt` state dict. A `.pth` file is read with `weights_only=True`: tensors only, no pickled
objects. The ImageNet head is never loaded (the classifier has its own classes), and a layer whose
shape differs (the 3x3 stem used below 64 px) keeps its seeded random init; the log says which.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping
from urllib.parse import urlparse

import torch
from safetensors.torch import load_file
from torch import nn
from torchvision.models import ResNet18_Weights

from warmfed_flwr.config import ConfigError
from warmfed_flwr.logs import logger

KEY = "model.pretrained"
HEAD_PREFIX = "fc."
_OPTIONAL_SUFFIX = "num_batches_tracked"  # absent from torchvision's (pre-1.0) ImageNet checkpoints


def hub_cache_path() -> Path:
    """Where torchvision caches the ImageNet ResNet-18 checkpoint: <torch hub dir>/checkpoints/<file of its URL>."""
    file_name = Path(urlparse(ResNet18_Weights.IMAGENET1K_V1.url).path).name
    return Path(torch.hub.get_dir()) / "checkpoints" / file_name


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a `.safetensors` file or a tensors-only `.pth` / `.pt` state dict, on the CPU."""
    if not path.is_file():
        raise ConfigError(f"config key '{KEY}': no weights file at {path}")
    try:
        if path.suffix == ".safetensors":
            tensors = load_file(path, device="cpu")
        else:
            tensors = torch.load(path, map_location="cpu", weights_only=True)
    # Any failure to read the user's file names the key and the file. torch.load refuses a file
    # holding more than tensors with an UnpicklingError, whose module this app does not import.
    except Exception as err:
        raise ConfigError(f"config key '{KEY}': cannot read weights file {path}: {err}") from err
    if not isinstance(tensors, Mapping) or not all(
        isinstance(name, str) and isinstance(value, torch.Tensor) for name, value in tensors.items()
    ):
        raise ConfigError(f"config key '{KEY}': {path} is not a state dict of named tensors")
    return dict(tensors)


def _check_resnet18_keys(own: Mapping[str, torch.Tensor], tensors: Mapping[str, torch.Tensor], path: Path) -> None:
    """Raise unless `tensors` has every non-head tensor of a ResNet-18 and nothing else."""
    needed = {k for k in own if not k.startswith(HEAD_PREFIX) and not k.endswith(_OPTIONAL_SUFFIX)}
    missing, unexpected = sorted(needed - tensors.keys()), sorted(tensors.keys() - own.keys())
    if missing or unexpected:
        raise ConfigError(
            f"config key '{KEY}': {path} is not a torchvision ResNet-18 state dict "
            f"(missing: {', '.join(missing[:5]) or 'none'}; unexpected: {', '.join(unexpected[:5]) or 'none'})"
        )


def load_matching(resnet: nn.Module, tensors: Mapping[str, torch.Tensor], path: Path) -> list[str]:
    """Copy every non-head tensor whose shape matches into `resnet`; return the names left as they were."""
    own = resnet.state_dict()
    _check_resnet18_keys(own, tensors, path)
    kept = {k: v for k, v in tensors.items() if not k.startswith(HEAD_PREFIX) and v.shape == own[k].shape}
    resnet.load_state_dict(kept, strict=False)
    return [k for k in own if k not in kept and not k.endswith(_OPTIONAL_SUFFIX)]


def weights_path(pretrained: str) -> Path | None:
    """The weights file `pretrained` names: None for "none", torch's hub cache for "auto" (it may be absent)."""
    if pretrained == "none":
        return None
    if pretrained == "auto":
        return hub_cache_path()
    return Path(pretrained).expanduser()


def apply_imagenet_weights(resnet: nn.Module, pretrained: str) -> None:
    """Load ImageNet weights into a torchvision ResNet-18 as `model.pretrained` says and log what was used."""
    path = weights_path(pretrained)
    if path is None:
        logger.info("ResNet-18: random init (config key '%s' is \"none\")", KEY)
        return
    if pretrained == "auto" and not path.is_file():
        logger.info("ResNet-18: random init (no ImageNet weights at %s)", path)
        return
    left_random = load_matching(resnet, read_state_dict(path), path)
    logger.info("ResNet-18: ImageNet weights from %s (random init kept for %s)", path, ", ".join(left_random))
