"""The Stable Diffusion backbone on a tiny random-weight pipeline built from configs (CPU, no download)."""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import pytest
import torch

from warmfed_flwr.config import Settings
from warmfed_flwr.generative.adapter import adapter_config, validate_adapter
from warmfed_flwr.generative.base import ClassLabels
from warmfed_flwr.generative.sd_utils import class_prompt, initial_latents, save_adapter_for_diffusers
from warmfed_flwr.generative.stable_diffusion import StableDiffusionBackbone, load_stable_diffusion_backbone
from warmfed_flwr.generative.upload import encode_adapter

# scripts/ is on pytest's pythonpath (pyproject.toml)
from sd_pipeline_factory import build_sd15_sized_pipeline, build_tiny_pipeline

CLASSES = ["alarm_clock", "cat"]
# On CUDA the backbone runs in fp16, where batching and loading paths differ in the last bits.
TOLERANCE = 5e-3 if torch.cuda.is_available() else 1e-5
RESOLUTION = 16
SETTINGS = Settings.from_run_config(
    {
        "lora.backbone": "stable-diffusion",
        "lora.steps": 4,
        "lora.batch-size": 4,
        "lora.lr": 0.01,
        "generate.steps": 2,
        "generate.batch-size": 8,
        "generate.guidance": 7.5,  # as the Stable Diffusion presets: classifier-free guidance on
    }
)


def module_count(backbone: StableDiffusionBackbone) -> int:
    return len(list(backbone.pipeline.unet.modules()))


def client_images(count: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return torch.rand(count, 3, 24, 24, generator=generator), torch.arange(count) % len(CLASSES)


@pytest.fixture(scope="module", autouse=True)
def one_cpu_thread():
    """The tiny models run several times faster on one thread than on contended threads."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def backbone() -> StableDiffusionBackbone:
    return StableDiffusionBackbone(build_tiny_pipeline(RESOLUTION))


@pytest.fixture(scope="module")
def adapter(backbone: StableDiffusionBackbone) -> dict[str, np.ndarray]:
    images, labels = client_images()
    return backbone.fit_lora(images, ClassLabels(labels, CLASSES), SETTINGS.lora, seed=0)


def test_fit_changes_only_lora_parameters() -> None:
    backbone = StableDiffusionBackbone(build_tiny_pipeline(RESOLUTION))
    components = ("unet", "vae", "text_encoder")
    before = {
        name: {key: value.clone() for key, value in getattr(backbone.pipeline, name).state_dict().items()}
        for name in components
    }
    modules_before = module_count(backbone)
    images, labels = client_images()

    adapter = backbone.fit_lora(images, ClassLabels(labels, CLASSES), SETTINGS.lora, seed=0)

    for name in components:
        after = getattr(backbone.pipeline, name).state_dict()
        assert after.keys() == before[name].keys()
        assert all(torch.equal(after[key], before[name][key]) for key in after), name
    assert module_count(backbone) == modules_before
    assert not getattr(backbone.pipeline.unet, "peft_config", None)
    lora_b = [array for name, array in adapter.items() if ".lora_B." in name]
    assert lora_b and all(np.abs(array).max() > 0 for array in lora_b), "LoRA B matrices start at zero and must train"


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA backward kernels in fp16 are not bit-reproducible")
def test_fit_is_deterministic_per_seed(backbone: StableDiffusionBackbone, adapter: dict[str, np.ndarray]) -> None:
    images, labels = client_images()
    again = backbone.fit_lora(images, ClassLabels(labels, CLASSES), SETTINGS.lora, seed=0)
    assert all(np.array_equal(again[name], adapter[name]) for name in adapter)


@pytest.mark.parametrize("targets", ["attention", "all"])
def test_adapter_arrays_match_adapter_shapes(backbone: StableDiffusionBackbone, targets: str) -> None:
    lora = dataclasses.replace(SETTINGS.lora, targets=targets, steps=1)
    images, labels = client_images(4)

    adapter = backbone.fit_lora(images, ClassLabels(labels, CLASSES), lora, seed=0)

    shapes = backbone.adapter_shapes(lora)
    assert {name: array.shape for name, array in adapter.items()} == shapes
    assert all(array.dtype == np.float32 for array in adapter.values())
    if targets == "attention":
        assert all(any(f".{p}.lora_" in name for p in ("to_q", "to_k", "to_v", "to_out.0")) for name in shapes)
    else:
        assert any(".conv1.lora_" in name for name in shapes) and any(".to_q.lora_" in name for name in shapes)


def test_generate_is_deterministic_sized_and_in_range(backbone: StableDiffusionBackbone) -> None:
    labels = torch.tensor([0, 1, 1])

    first = backbone.generate(ClassLabels(labels, CLASSES), None, SETTINGS.generate, image_size=24, seed=3)
    again = backbone.generate(ClassLabels(labels, CLASSES), None, SETTINGS.generate, image_size=24, seed=3)
    other_seed = backbone.generate(ClassLabels(labels, CLASSES), None, SETTINGS.generate, image_size=24, seed=4)

    assert first.shape == (3, 3, 24, 24) and first.dtype == torch.float32
    assert 0.0 <= float(first.min()) and float(first.max()) <= 1.0
    assert torch.equal(first, again)
    assert not torch.allclose(first, other_seed)


def test_generate_changes_with_adapter_and_releases_it(
    backbone: StableDiffusionBackbone, adapter: dict[str, np.ndarray]
) -> None:
    labels = torch.tensor([0, 1])
    base = backbone.generate(ClassLabels(labels, CLASSES), None, SETTINGS.generate, RESOLUTION, seed=5)

    adapted = backbone.generate(ClassLabels(labels, CLASSES), adapter, SETTINGS.generate, RESOLUTION, seed=5)
    base_again = backbone.generate(ClassLabels(labels, CLASSES), None, SETTINGS.generate, RESOLUTION, seed=5)

    assert (adapted - base).abs().max() > 1e-3
    assert torch.equal(base, base_again)


def test_ten_adapters_in_a_row_leave_the_unet_unchanged(backbone: StableDiffusionBackbone) -> None:
    shapes = backbone.adapter_shapes(SETTINGS.lora)
    modules_before = module_count(backbone)
    parameters_before = sum(p.numel() for p in backbone.pipeline.unet.parameters())
    settings = dataclasses.replace(SETTINGS.generate, steps=1)
    rng = np.random.default_rng(0)

    for seed in range(10):
        adapter = {name: rng.normal(0.0, 0.05, shape).astype(np.float32) for name, shape in shapes.items()}
        backbone.generate(ClassLabels(torch.tensor([0]), CLASSES), adapter, settings, RESOLUTION, seed=seed)

    assert module_count(backbone) == modules_before
    assert sum(p.numel() for p in backbone.pipeline.unet.parameters()) == parameters_before
    assert not getattr(backbone.pipeline.unet, "peft_config", None)


def test_adapter_round_trips_into_diffusers_load_lora_weights(
    backbone: StableDiffusionBackbone, adapter: dict[str, np.ndarray], tmp_path
) -> None:
    labels = torch.tensor([0, 1])
    prompts = [class_prompt(SETTINGS.generate.prompt_template, CLASSES[int(label)]) for label in labels]
    ours = backbone.generate(ClassLabels(labels, CLASSES), adapter, SETTINGS.generate, RESOLUTION, seed=7)
    written = save_adapter_for_diffusers(adapter, tmp_path)
    pipeline = build_tiny_pipeline(RESOLUTION).to(backbone.accelerator.device, backbone.weight_dtype)
    pipeline.set_progress_bar_config(disable=True)

    latents = initial_latents(pipeline, len(prompts), torch.Generator().manual_seed(7))

    def run() -> torch.Tensor:
        return pipeline(
            prompts,
            num_inference_steps=SETTINGS.generate.steps,
            guidance_scale=SETTINGS.generate.guidance,
            latents=latents.to(pipeline.device, pipeline.dtype),
            output_type="pt",
        ).images.float().cpu()

    base = run()
    pipeline.load_lora_weights(tmp_path)
    theirs = run()

    assert written.is_file() and written.suffix == ".safetensors"
    torch.testing.assert_close(theirs, ours, atol=TOLERANCE, rtol=0)
    assert (theirs - base).abs().max() > 1e-3


def test_an_int8_upload_of_a_stable_diffusion_adapter_still_loads_into_diffusers(
    backbone: StableDiffusionBackbone, adapter: dict[str, np.ndarray], tmp_path
) -> None:
    """The default upload (int8, packed) of an SD adapter: validated and decoded on the server, within half a step of
    the fitted tensors, and the kept file loads with diffusers' load_lora_weights."""
    lora = dataclasses.replace(SETTINGS.lora, upload_dtype="int8")
    shapes = backbone.adapter_shapes(lora)
    decoded = validate_adapter(encode_adapter(adapter, "int8"), adapter_config(lora), shapes, lora, "client-0")
    for name, fitted in adapter.items():
        assert np.abs(decoded[name] - fitted).max() <= np.abs(fitted).max() / 127 + 1e-7
    pipeline = build_tiny_pipeline(RESOLUTION)
    pipeline.load_lora_weights(tmp_path, weight_name=save_adapter_for_diffusers(decoded, tmp_path).name)
    assert any("lora" in name for name, _ in pipeline.unet.named_parameters())


def test_prompt_template_is_applied_in_fit_and_generate(
    backbone: StableDiffusionBackbone, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[str] = []
    encode_prompt = backbone.pipeline.encode_prompt

    def recording_encode_prompt(prompt, *args, **kwargs):
        seen.extend([prompt] if isinstance(prompt, str) else prompt)
        return encode_prompt(prompt, *args, **kwargs)

    monkeypatch.setattr(backbone.pipeline, "encode_prompt", recording_encode_prompt)
    settings = dataclasses.replace(SETTINGS.generate, prompt_template="a sketch of a {class}", steps=1)
    images, labels = client_images(4)

    backbone.fit_lora(images, ClassLabels(labels, CLASSES), dataclasses.replace(SETTINGS.lora, steps=1), 0, "a sketch of a {class}")
    assert seen == ["a sketch of a alarm clock", "a sketch of a cat", ""]
    seen.clear()
    backbone.generate(ClassLabels(torch.tensor([1, 0]), CLASSES), None, settings, RESOLUTION, seed=0)
    assert seen[:2] == ["a sketch of a cat", "a sketch of a alarm clock"]


def test_out_of_memory_halves_the_batch_and_warns(
    backbone: StableDiffusionBackbone, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    labels = torch.tensor([0, 1, 0, 1])
    expected = backbone.generate(ClassLabels(labels, CLASSES), None, SETTINGS.generate, RESOLUTION, seed=2)
    unet = backbone.pipeline.unet
    forward = unet.forward

    def forward_fitting_two_prompts(sample, *args, **kwargs):
        if sample.shape[0] > 4:  # two prompts, doubled for classifier-free guidance
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return forward(sample, *args, **kwargs)

    monkeypatch.setattr(unet, "forward", forward_fitting_two_prompts)
    with caplog.at_level(logging.WARNING, logger="flwr"):
        images = backbone.generate(ClassLabels(labels, CLASSES), None, SETTINGS.generate, RESOLUTION, seed=2)

    torch.testing.assert_close(images, expected, atol=TOLERANCE, rtol=0)
    messages = [record.getMessage() for record in caplog.records]
    assert any("batches of 4" in m for m in messages) and any("batches of 2" in m for m in messages)


def test_foreign_adapter_is_rejected_and_leaves_no_layers(
    backbone: StableDiffusionBackbone, adapter: dict[str, np.ndarray]
) -> None:
    renamed = {name.replace("to_q", "to_x"): array for name, array in adapter.items()}
    modules_before = module_count(backbone)

    with pytest.raises(ValueError, match="does not fit the stable-diffusion UNet"):
        backbone.generate(ClassLabels(torch.tensor([0]), CLASSES), renamed, SETTINGS.generate, RESOLUTION, seed=0)
    assert module_count(backbone) == modules_before


def test_missing_model_names_the_path(tmp_path) -> None:
    missing = tmp_path / "no-such-model"
    with pytest.raises(FileNotFoundError, match="no-such-model.*on disk at that path or downloadable"):
        StableDiffusionBackbone.from_model_path(str(missing))
    with pytest.raises(ValueError, match="lora.model-path"):
        StableDiffusionBackbone.from_model_path("")


def test_a_pipeline_with_pickled_weights_only_is_refused_naming_the_path(tmp_path) -> None:
    build_tiny_pipeline(RESOLUTION).save_pretrained(tmp_path, safe_serialization=False)
    assert list(tmp_path.glob("unet/*.bin"))
    with pytest.raises(FileNotFoundError, match=f"cannot load '{tmp_path}'.*lora.model-path.*safetensors"):
        StableDiffusionBackbone.from_model_path(str(tmp_path))


def test_loader_caches_a_saved_pipeline_until_release(tmp_path) -> None:
    build_tiny_pipeline(RESOLUTION).save_pretrained(tmp_path)

    first = load_stable_diffusion_backbone(str(tmp_path))
    assert load_stable_diffusion_backbone(str(tmp_path)) is first
    assert first.resolution == RESOLUTION
    first.release()

    with pytest.raises(RuntimeError, match="released"):
        first.generate(ClassLabels(torch.tensor([0]), CLASSES), None, SETTINGS.generate, RESOLUTION, seed=0)
    second = load_stable_diffusion_backbone(str(tmp_path))
    assert second is not first
    second.release()


def test_class_prompt_turns_underscores_into_spaces() -> None:
    assert class_prompt("a photo of a {class}", "alarm_clock") == "a photo of a alarm clock"


def test_sd15_sized_pipeline_has_the_real_layer_sizes() -> None:
    pipeline = build_sd15_sized_pipeline(256, device="meta")
    counts = {
        name: sum(p.numel() for p in getattr(pipeline, name).parameters()) for name in ("unet", "vae", "text_encoder")
    }
    # Parameter counts of runwayml/stable-diffusion-v1-5's UNet, VAE and CLIP ViT-L/14 text encoder.
    assert counts == {"unet": 859_520_964, "vae": 83_653_863, "text_encoder": 123_060_480}
    assert pipeline.unet.config.sample_size * pipeline.vae_scale_factor == 256
