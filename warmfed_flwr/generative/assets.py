"""Where the shipped tiny base model lives, also when the app runs from a Flower app bundle.

`flwr run` imports the app from a copy (FAB) that holds only .py/.toml/.md/.json files, so the
shipped safetensors weights are not next to the imported code there. They are then found through
the installed `warmfed-flwr` distribution (an editable install points at the source folder).
"""

from __future__ import annotations

import json
from importlib import metadata
from pathlib import Path
from urllib.parse import unquote, urlparse

ASSET_SUBDIR = Path("warmfed_flwr") / "assets" / "tiny-unet"
TINY_ASSET_DIR = Path(__file__).resolve().parent.parent / "assets" / "tiny-unet"  # beside the code; scripts/ write it
WEIGHTS_FILE = "diffusion_pytorch_model.safetensors"


def _installed_asset_dirs() -> list[Path]:
    """The asset folder of the installed distribution: its source folder if editable, else site-packages."""
    try:
        dist = metadata.distribution("warmfed-flwr")
    except metadata.PackageNotFoundError:
        return []
    candidates = [Path(str(dist.locate_file(ASSET_SUBDIR)))]
    direct_url = dist.read_text("direct_url.json")
    if direct_url:
        url = json.loads(direct_url).get("url", "")
        if url.startswith("file://"):
            candidates.insert(0, Path(unquote(urlparse(url).path)) / ASSET_SUBDIR)
    return candidates


def shipped_tiny_base_dir() -> Path:
    """The folder holding the shipped tiny base model's config.json and weights."""
    tried = [TINY_ASSET_DIR, *_installed_asset_dirs()]
    for folder in tried:
        if (folder / WEIGHTS_FILE).is_file():
            return folder
    raise FileNotFoundError(
        "the shipped tiny base model was not found in "
        + ", ".join(str(p) for p in tried)
        + "; install the package (pip install -e .) or set config key 'lora.model-path' to a folder with "
        f"config.json and {WEIGHTS_FILE}"
    )
