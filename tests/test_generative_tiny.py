"""The tiny diffusion backbone on a miniature UNet built from config (seconds on CPU)."""

from __future__ import annotations

import copy
import gc
import json
import shutil
from dataclasses import replace

import numpy as np
import pytest
import torch
from diffusers import UNet2DModel
from peft import LoraConfig, get_peft_model_state_dict, inject_adapter_in_model, set_peft_model_state_dict
from safetensors.torch import load_file

from warmfed_flwr.config import Settings
from warmfed_flwr.generative import adapter_config, load_backbone, validate_adapter
from warmfed_flwr.generative.upload import encode_adapter
from warmfed_flwr.generative.assets import TINY_ASSET_DIR
from warmfed_flwr.generative.base import ClassLabels
from warmfed_flwr.generative.export import export_adapter
from warmfed_flwr.generative.lora_targets import ATTENTION_PROJECTIONS, fold_lora_scaling
from warmfed_flwr.generative.tiny import TinyBackbone, load_tiny_backbone
from warmfed_flwr.generative.tiny_training import denoising_loss
from warmfed_flwr.generative.tiny_unet import SCHEDULER_CONFIG, tiny_unet_config

CLASS_NAMES = ("a", "b", "c")


@pytest.fixture(scope="module")
def backbone() -> TinyBackbone:
    torch.manual_seed(0)
    config = tiny_unet_config(num_classes=len(CLASS_NAMES), sample_size=8, block_out_channels=(8, 16))
    return TinyBackbone(UNet2DModel(**config))


@pytest.fixture(scope="module")
def settings() -> Settings:
    defaults = Settings.from_run_config({})
    return replace(
        defaults,
        lora=replace(defaults.lora, steps=4, batch_size=8),
        generate=replace(defaults.generate, steps=3, batch_size=4),
    )


@pytest.fixture(scope="module")
def client_data() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return torch.rand(12, 3, 8, 8, generator=generator), torch.arange(12) % len(CLASS_NAMES)


@pytest.fixture(scope="module")
def adapter(backbone, settings, client_data) -> dict[str, np.ndarray]:
    images, labels = client_data
    return backbone.fit_lora(images, ClassLabels(labels, CLASS_NAMES), settings.lora, seed=0)


def _base_state(backbone: TinyBackbone) -> dict[str, torch.Tensor]:
    return {name: tensor.clone() for name, tensor in backbone.unet.state_dict().items()}


def _live_modules() -> int:
    """How many torch modules exist in the process (type() avoids proxies' __class__ lookups)."""
    gc.collect()
    return sum(issubclass(type(thing), torch.nn.Module) for thing in gc.get_objects())


def _generate(backbone, settings, adapter, seed=0, image_size=8, labels=torch.tensor([0, 1, 2, 0, 1, 2])):
    return backbone.generate(ClassLabels(labels, CLASS_NAMES), adapter, settings.generate, image_size=image_size, seed=seed)


def test_fit_trains_lora_only_and_leaves_the_base_unchanged(backbone, settings, client_data):
    before = _base_state(backbone)
    images, labels = client_data
    adapter = backbone.fit_lora(images, ClassLabels(labels, CLASS_NAMES), settings.lora, seed=0)
    after = backbone.unet.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[name], after[name]) for name in before)
    assert all(".lora_" in name for name in adapter)
    assert all(array.dtype == np.float32 for array in adapter.values())
    lora_b = [array for name, array in adapter.items() if ".lora_B." in name]
    assert lora_b and all(np.abs(array).max() > 0 for array in lora_b), "B matrices start at zero; training moves them"


def test_fit_is_deterministic_per_seed(backbone, settings, client_data, adapter):
    images, labels = client_data
    again = backbone.fit_lora(images, ClassLabels(labels, CLASS_NAMES), settings.lora, seed=0)
    other = backbone.fit_lora(images, ClassLabels(labels, CLASS_NAMES), settings.lora, seed=1)
    assert all(np.array_equal(adapter[name], again[name]) for name in adapter)
    assert any(not np.array_equal(adapter[name], other[name]) for name in adapter)


def test_adapter_matches_expected_shapes_and_validates(backbone, settings, adapter):
    expected = backbone.adapter_shapes(settings.lora)
    assert {name: array.shape for name, array in adapter.items()} == expected
    sent = encode_adapter(adapter, settings.lora.upload_dtype)  # int8 by default, as a client sends it
    validated = validate_adapter(sent, adapter_config(settings.lora), expected, settings.lora, "client-0")
    assert validated.keys() == expected.keys()
    for name, fitted in adapter.items():  # within half an int8 step of each rank component's largest value
        assert np.abs(validated[name] - fitted).max() <= np.abs(fitted).max() / 127 + 1e-7


def test_all_targets_cover_convolutions_and_class_embedding(backbone, settings):
    names = backbone.adapter_shapes(settings.lora)
    assert any(name.startswith("conv_in.") for name in names)
    assert any(name.startswith("class_embedding.") for name in names)


def test_attention_targets_cover_only_attention_projections(backbone, settings):
    names = backbone.adapter_shapes(replace(settings.lora, targets="attention"))
    assert names and all(any(f".{target}.lora_" in name for target in ATTENTION_PROJECTIONS) for name in names)


def test_generate_is_deterministic_seeded_and_in_range(backbone, settings, adapter):
    first = _generate(backbone, settings, adapter)
    assert first.shape == (6, 3, 8, 8) and first.dtype == torch.float32
    assert 0.0 <= float(first.min()) and float(first.max()) <= 1.0
    assert torch.equal(first, _generate(backbone, settings, adapter))
    assert not torch.equal(first, _generate(backbone, settings, adapter, seed=1))


def test_generate_does_not_depend_on_batch_size(backbone, settings, adapter):
    one_batch = replace(settings, generate=replace(settings.generate, batch_size=64))
    torch.testing.assert_close(_generate(backbone, settings, adapter), _generate(backbone, one_batch, adapter))


def test_generate_changes_with_an_adapter(backbone, settings, adapter):
    assert (_generate(backbone, settings, adapter) - _generate(backbone, settings, None)).abs().max() > 1e-3


def test_generate_resizes_to_the_requested_size(backbone, settings):
    images = _generate(backbone, settings, None, image_size=20)
    assert images.shape == (6, 3, 20, 20)
    assert 0.0 <= float(images.min()) and float(images.max()) <= 1.0


def test_reloaded_adapter_reproduces_the_fitted_model_with_alpha_scaling(backbone, settings):
    lora = replace(settings.lora, rank=4, alpha=12)
    torch.manual_seed(3)
    fitted = backbone._copy_with_lora(lora).eval()
    for name, parameter in fitted.named_parameters():
        if ".lora_B." in name or "lora_embedding_B" in name:
            parameter.data.normal_(0.0, 0.1)
    reloaded = backbone.with_adapter(fold_lora_scaling(get_peft_model_state_dict(fitted), 12 / 4))
    sample, timestep, labels = torch.randn(4, 3, 8, 8), torch.tensor([10, 200, 500, 900]), torch.tensor([0, 1, 2, 3])
    with torch.no_grad():
        torch.testing.assert_close(reloaded(sample, timestep, labels).sample, fitted(sample, timestep, labels).sample)


def test_sixty_adapters_in_a_row_leave_the_base_as_it_was(backbone, settings, adapter):
    modules, parameters = len(list(backbone.unet.modules())), sum(p.numel() for p in backbone.unet.parameters())
    base_images = _generate(backbone, settings, None)
    live_modules = _live_modules()
    for client in range(60):
        scaled = {name: array * (1 + client % 3) for name, array in adapter.items()}
        wanted = ClassLabels(torch.tensor([client % 3]), CLASS_NAMES)
        backbone.generate(wanted, scaled, settings.generate, image_size=8, seed=client)
    assert _live_modules() == live_modules
    assert len(list(backbone.unet.modules())) == modules
    assert sum(p.numel() for p in backbone.unet.parameters()) == parameters
    assert torch.equal(_generate(backbone, settings, None), base_images)


def test_labels_outside_the_class_names_are_refused(backbone, settings, adapter):
    with pytest.raises(ValueError, match="labels"):
        backbone.generate(ClassLabels(torch.tensor([0, 3]), CLASS_NAMES), adapter, settings.generate, image_size=8, seed=0)


def test_shipped_asset_loads_with_the_expected_config():
    lora = Settings.from_run_config({}).lora
    backbone = load_backbone(lora)
    assert isinstance(backbone, TinyBackbone) and backbone is load_tiny_backbone()
    assert (TINY_ASSET_DIR / "diffusion_pytorch_model.safetensors").is_file()
    config = backbone.unet.config
    assert (config.sample_size, config.in_channels, config.num_class_embeds) == (16, 3, 11)
    assert tuple(config.block_out_channels) == tiny_unet_config()["block_out_channels"] == (32, 64, 96)
    assert all(parameter.dtype == torch.float32 for parameter in backbone.unet.parameters())
    adapter_bytes = 4 * sum(int(np.prod(shape)) for shape in backbone.adapter_shapes(lora).values())
    assert adapter_bytes <= backbone.base_bytes() / 5


def test_shipped_asset_carries_its_zero_snr_v_prediction_schedule():
    scheduler = load_tiny_backbone().scheduler
    assert scheduler.config.prediction_type == "v_prediction"
    assert scheduler.config.rescale_betas_zero_snr and scheduler.config.timestep_spacing == "trailing"
    assert float(scheduler.alphas_cumprod[-1]) == 0.0, "the last training step must be pure noise"


def test_a_base_folder_without_its_schedule_is_refused_naming_the_file(tmp_path):
    UNet2DModel(**tiny_unet_config(num_classes=3, sample_size=8, block_out_channels=(8, 16))).save_pretrained(tmp_path)
    with pytest.raises(FileNotFoundError, match="scheduler_config.json.*lora.model-path"):
        load_tiny_backbone(str(tmp_path))


def test_a_base_with_pickled_weights_only_is_refused_naming_the_folder(tmp_path):
    UNet2DModel(**tiny_unet_config(num_classes=3, sample_size=8, block_out_channels=(8, 16))).save_pretrained(
        tmp_path, safe_serialization=False
    )
    shutil.copy(TINY_ASSET_DIR / SCHEDULER_CONFIG, tmp_path)
    assert (tmp_path / "diffusion_pytorch_model.bin").is_file()
    with pytest.raises(FileNotFoundError, match=r"no safetensors weights in .*lora.model-path"):
        load_tiny_backbone(str(tmp_path))


def test_v_prediction_loss_targets_the_velocity(backbone):
    clean, labels = torch.rand(4, 3, 8, 8) * 2 - 1, torch.tensor([0, 1, 2, 0])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(5)
        loss = denoising_loss(backbone.unet, backbone.scheduler, clean, labels, backbone.null_label)
        torch.manual_seed(5)
        noise = torch.randn_like(clean)
        timesteps = torch.randint(0, backbone.scheduler.config.num_train_timesteps, (4,))
        dropped = torch.rand(4) < 0.1
        class_labels = torch.where(dropped, torch.full_like(labels, backbone.null_label), labels)
        with torch.no_grad():
            prediction = backbone.unet(backbone.scheduler.add_noise(clean, noise, timesteps), timesteps,
                                       class_labels=class_labels).sample
    velocity = backbone.scheduler.get_velocity(clean, noise, timesteps)
    torch.testing.assert_close(loss.detach(), torch.nn.functional.mse_loss(prediction, velocity))
    assert not torch.allclose(loss.detach(), torch.nn.functional.mse_loss(prediction, noise))


def test_exported_adapter_loads_with_peft_as_the_readme_shows(backbone, settings, adapter, tmp_path):
    """keep-adapters' export of a tiny adapter, loaded with peft alone, gives the model the server generates with."""
    written = export_adapter("tiny", adapter, tmp_path / "partition-0")
    assert written.name == "pytorch_lora_weights.safetensors"
    unet = copy.deepcopy(backbone.unet)
    config = json.loads((tmp_path / "partition-0" / "adapter_config.json").read_text())
    unet = inject_adapter_in_model(LoraConfig(**config), unet)
    result = set_peft_model_state_dict(unet, load_file(str(written)))
    assert not result.unexpected_keys
    sample, timestep, labels = torch.randn(2, 3, 8, 8), torch.tensor([500, 20]), torch.tensor([0, 2])
    with torch.no_grad():
        theirs = unet(sample, timestep, class_labels=labels).sample
        ours = backbone.with_adapter(adapter)(sample, timestep, class_labels=labels).sample
        base = backbone.unet(sample, timestep, class_labels=labels).sample
    torch.testing.assert_close(theirs, ours, atol=1e-5, rtol=1e-4)
    assert (theirs - base).abs().max() > 1e-4
