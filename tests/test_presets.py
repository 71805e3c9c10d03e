"""Dry runs of the experiment presets, with no training and no download.

Each real-data preset runs on a tiny fixture laid out like the real data set on disk: its
settings parse, the data splits into the promised clients, every client loads, the preset's
classifier takes a batch, and the Stable Diffusion backbone, built on a tiny random-weight
pipeline (never from lora.model-path), accepts the preset's LoRA and prompt settings.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import pytest
import torch
from peft import get_peft_model_state_dict, inject_adapter_in_model
from PIL import Image

from warmfed_flwr.config import Settings
from warmfed_flwr.data import domain_names, load_client_data, load_domain_set, num_clients
from warmfed_flwr.data.camelyon17 import CLASS_NAMES as CAMELYON_CLASSES
from warmfed_flwr.data.digits_domains import DOMAIN_NAMES as DIGITS_DOMAINS
from warmfed_flwr.data.far_styles import FAR_STYLES
from warmfed_flwr.data.domainnet import DOMAINS as DOMAINNET_DOMAINS
from warmfed_flwr.data.domainnet import FEDBN_CLASSES
from warmfed_flwr.data.office_caltech10 import DOMAINS as OFFICE_DOMAINS
from warmfed_flwr.generative.base import ClassLabels
from warmfed_flwr.generative.lora_targets import ATTENTION_PROJECTIONS, lora_config
from warmfed_flwr.generative.sd_utils import class_prompt
from warmfed_flwr.generative.stable_diffusion import StableDiffusionBackbone
from warmfed_flwr.learning.models import build_classifier
from warmfed_flwr.presets import load_preset

# scripts/ is on pytest's pythonpath (pyproject.toml)
from sd_pipeline_factory import build_sd15_sized_pipeline, build_tiny_pipeline

CONF = Path(__file__).resolve().parents[1] / "conf"
FIXTURE_IMAGE_SIZE = 32
SD15_HUB_ID = "stable-diffusion-v1-5/stable-diffusion-v1-5"
OFFICE_CLASSES = (
    "back_pack",
    "bike",
    "calculator",
    "headphones",
    "keyboard",
    "laptop_computer",
    "monitor",
    "mouse",
    "mug",
    "projector",
)


def save(path: Path, shade: int, image_format: str = "JPEG") -> None:
    """A small image whose colours and black box vary with `shade`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.new("RGB", (20, 16), (shade % 256, 255 - shade % 256, 40))
    image.paste((0, 0, 0), (0, 0, 4 + shade % 12, 8))
    image.save(path, format=image_format)


def office_caltech10_tree(root: Path) -> None:
    """<root>/<domain>/<class>/*.jpg: 4 images per class and domain (the split needs one test image per class)."""
    for domain in OFFICE_DOMAINS:
        for label, name in enumerate(OFFICE_CLASSES):
            for index in range(4):
                save(root / domain / name / f"frame_{index:04d}.jpg", 20 * label + index)


def domainnet_tree(root: Path) -> None:
    """<root>/<domain>/<class>/*.jpg and official <domain>_{train,test}.txt: 10 train and 2 test per class.

    10 train images per class and domain give each of 10 clients per domain 10 training images.
    The list files number the classes among all 345, as the real ones do; an extra class (not
    among FedBN's ten) must be ignored.
    """
    for domain in DOMAINNET_DOMAINS:
        lines: dict[str, list[str]] = {"train": [], "test": []}
        for label, name in enumerate((*FEDBN_CLASSES, "aircraft_carrier")):
            for index in range(12):
                relative = f"{domain}/{name}/{domain}_{label:03d}_{index:06d}.jpg"
                save(root / relative, 25 * label + index)
                lines["train" if index < 10 else "test"].append(f"{relative} {100 + label}")
        for part, listed in lines.items():
            (root / f"{domain}_{part}.txt").write_text("\n".join(listed) + "\n")


def camelyon17_tree(root: Path) -> None:
    """WILDS' metadata.csv and patches/ for 5 hospitals, 16 patches each, half of them tumour.

    Hospitals 0-2 have official split-1 (test) rows; 3 and 4 have only split-0 rows and are split
    by data.test-fraction.
    """
    rows = [",patient,node,x_coord,y_coord,tumor,slide,center,split"]
    for center in range(5):
        for index in range(16):
            patient, node, x, y, tumor = 10 * center + index % 3, index % 2, 32 * index, 64 * center, index % 2
            split = 1 if center < 3 and index >= 12 else 0
            rows.append(f"{len(rows) - 1},{patient},{node},{x},{y},{tumor},{patient},{center},{split}")
            folder = f"patient_{patient:03d}_node_{node}"
            save(root / "patches" / folder / f"patch_{folder}_x_{x}_y_{y}.png", 150 * tumor + index, "PNG")
    (root / "metadata.csv").write_text("\n".join(rows) + "\n")


@dataclasses.dataclass(frozen=True)
class RealPreset:
    """A real-data preset, the fixture of its data set's layout and what the preset promises."""

    file: str
    make_fixture: Callable[[Path], None]
    domains: tuple[str, ...]
    clients_per_domain: int
    class_names: tuple[str, ...]


REAL_PRESETS = (
    RealPreset("office-caltech10.toml", office_caltech10_tree, OFFICE_DOMAINS, 1, OFFICE_CLASSES),
    RealPreset("domainnet.toml", domainnet_tree, DOMAINNET_DOMAINS, 1, FEDBN_CLASSES),
    RealPreset("domainnet-60.toml", domainnet_tree, DOMAINNET_DOMAINS, 10, FEDBN_CLASSES),
    RealPreset("camelyon17.toml", camelyon17_tree, tuple(f"hospital{c}" for c in range(5)), 1, CAMELYON_CLASSES),
)


def preset_settings(file: str, overrides: dict[str, object] | None = None) -> Settings:
    """The settings of preset `file` under conf/, with run-config `overrides` on top."""
    return Settings.from_run_config(load_preset(CONF / file) | (overrides or {}))


@pytest.fixture(scope="module")
def tiny_sd_backbone() -> Iterator[StableDiffusionBackbone]:
    """The Stable Diffusion backbone on a tiny random-weight pipeline (16 px), on one CPU thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield StableDiffusionBackbone(build_tiny_pipeline(16))
    torch.set_num_threads(threads)


@pytest.mark.parametrize("preset", REAL_PRESETS, ids=lambda p: p.file)
def test_real_preset_dry_run(preset: RealPreset, tiny_sd_backbone: StableDiffusionBackbone, tmp_path: Path) -> None:
    preset.make_fixture(tmp_path)
    settings = preset_settings(preset.file, {"data.root": str(tmp_path), "data.image-size": FIXTURE_IMAGE_SIZE})

    assert settings.rounds == 0 and settings.method == "warmfed"
    assert (settings.lora.backbone, settings.lora.model_path) == ("stable-diffusion", SD15_HUB_ID)
    assert settings.lora.targets == "attention" and settings.model.name == "resnet18"

    assert domain_names(settings.data) == preset.domains
    assert settings.data.clients_per_domain == preset.clients_per_domain
    assert num_clients(settings.data) == len(preset.domains) * preset.clients_per_domain
    class_names = load_domain_set(settings.data).class_names
    assert class_names == preset.class_names
    clients = [load_client_data(settings.data, pid) for pid in range(num_clients(settings.data))]
    for client in clients:
        assert len(client.train) >= settings.data.min_train_images and len(client.test) > 0
        assert client.train.images.shape[1:] == (3, FIXTURE_IMAGE_SIZE, FIXTURE_IMAGE_SIZE)
    assert [c.domain for c in clients] == [d for d in preset.domains for _ in range(preset.clients_per_domain)]

    classifier = build_classifier(settings.model.name, len(class_names), settings.data.image_size).eval()
    with torch.no_grad():
        logits = classifier(clients[0].train.subset(range(min(4, len(clients[0].train)))).float_images())
    assert logits.shape == (min(4, len(clients[0].train)), len(class_names))

    shapes = tiny_sd_backbone.adapter_shapes(settings.lora)
    assert shapes and all(any(f".{p}.lora_" in name for p in ATTENTION_PROJECTIONS) for name in shapes)
    assert {shape[0] for name, shape in shapes.items() if ".lora_A." in name} == {settings.lora.rank}

    prompts = [class_prompt(settings.generate.prompt_template, name) for name in class_names]
    assert len(set(prompts)) == len(class_names) and not any("_" in p or "{" in p for p in prompts)
    one_step = dataclasses.replace(settings.generate, steps=1)
    images = tiny_sd_backbone.generate(
        ClassLabels(torch.arange(len(class_names)), class_names), None, one_step, settings.data.image_size, settings.seed
    )
    assert images.shape == (len(class_names), 3, FIXTURE_IMAGE_SIZE, FIXTURE_IMAGE_SIZE)
    with torch.no_grad():
        assert classifier(images).shape == (len(class_names), len(class_names))


def test_camelyon17_prompts_read_as_pathology_phrases() -> None:
    template = preset_settings("camelyon17.toml").generate.prompt_template
    assert [class_prompt(template, name) for name in CAMELYON_CLASSES] == [
        "a histopathology patch of normal lymph node tissue",
        "a histopathology patch of tumor lymph node tissue",
    ]


@pytest.mark.parametrize("preset", REAL_PRESETS, ids=lambda p: p.file)
def test_stable_diffusion_15_adapter_fits_the_byte_limit(preset: RealPreset) -> None:
    """The preset's LoRA on Stable Diffusion 1.5's UNet (built on the meta device) stays under lora.max-bytes."""
    lora = preset_settings(preset.file).lora
    unet = build_sd15_sized_pipeline(256, device="meta").unet
    unet = inject_adapter_in_model(lora_config(unet, lora), unet)
    tensors = get_peft_model_state_dict(unet)
    adapter_bytes = sum(tensor.numel() * 4 for tensor in tensors.values())  # sent as float32
    assert len(tensors) == 256  # A and B for to_q, to_k, to_v, to_out.0 of SD 1.5's 32 attention blocks
    assert 0 < adapter_bytes <= lora.max_bytes


@pytest.mark.parametrize(
    ("file", "clients_per_domain"), [("digits-60.toml", 15), ("digits-scarce.toml", 5), ("digits-labelskew.toml", 3)]
)
def test_digits_preset_clients_all_load(file: str, clients_per_domain: int) -> None:
    settings = preset_settings(file)
    assert settings.data.name == "digits-domains" and settings.lora.backbone == "tiny"
    assert num_clients(settings.data) == len(DIGITS_DOMAINS) * clients_per_domain
    clients = [load_client_data(settings.data, pid) for pid in range(num_clients(settings.data))]
    train_sizes = [len(client.train) for client in clients]
    assert min(train_sizes) >= settings.data.min_train_images
    assert all(len(client.test) > 0 for client in clients)
    # Disjoint shards: together the clients of a domain hold exactly that domain's training images.
    domains = load_domain_set(settings.data).domains
    assert sum(train_sizes) == sum(len(domain.train) for domain in domains)
    classifier = build_classifier(settings.model.name, 10, settings.data.image_size).eval()
    with torch.no_grad():
        assert classifier(clients[-1].train.images).shape == (len(clients[-1].train), 10)


def test_digits_far_preset_has_one_client_per_far_style_and_the_digits_domains_split() -> None:
    """The same digits, split the same way as digits-domains, each domain in a drawn style of its own."""
    settings = preset_settings("digits-far.toml")
    near = Settings.from_run_config({}).data
    assert settings.data.name == "digits-far" and num_clients(settings.data) == len(FAR_STYLES) == 4
    far_domains, near_domains = load_domain_set(settings.data).domains, load_domain_set(near).domains
    assert [d.name for d in far_domains] == list(FAR_STYLES)
    for far, near_domain in zip(far_domains, near_domains):
        assert torch.equal(far.train.labels, near_domain.train.labels) and torch.equal(far.test.labels, near_domain.test.labels)
        assert float((far.train.images - near_domain.train.images).abs().mean()) > 0.1
        assert float(far.train.images.min()) >= 0.0 and float(far.train.images.max()) <= 1.0


def test_digits_scarce_clients_hold_a_handful_of_images_per_class() -> None:
    settings = preset_settings("digits-scarce.toml")
    for pid in range(num_clients(settings.data)):
        counts = load_client_data(settings.data, pid).train.class_counts(10)
        assert sum(counts) <= 60 and max(counts) <= 12


def test_digits_labelskew_clients_hold_a_few_classes_and_their_test_split_follows() -> None:
    settings = preset_settings("digits-labelskew.toml")
    assert settings.data.partitioning == "dirichlet" and settings.evaluate_others > 0
    for pid in range(num_clients(settings.data)):
        client = load_client_data(settings.data, pid)
        counts = np.array(client.train.class_counts(10))
        assert np.sort(counts)[-3:].sum() >= 0.6 * counts.sum()  # three classes hold most of the images
        test_counts = np.array(client.test.class_counts(10))
        assert set(np.flatnonzero(test_counts)) <= set(np.flatnonzero(counts))
