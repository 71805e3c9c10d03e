"""model.pretrained: ImageNet weights for ResNet-18 from local files only, random init otherwise, logged.

A fake "ImageNet" checkpoint (torchvision's resnet18 with a seeded random init and the 1000-class
head) stands in for the real file; every test runs with the network cut off.
"""

from __future__ import annotations

import logging
import socket
from fractions import Fraction
from pathlib import Path
from typing import Any, Iterator

import pytest
import torch
from safetensors.torch import save_file
from torchvision.models import resnet18

from warmfed_flwr.config import ConfigError, Settings
from warmfed_flwr.learning.models import build_classifier, initial_classifier
from warmfed_flwr.learning.pretrained import hub_cache_path
from warmfed_flwr.presets import load_preset

CONF = Path(__file__).resolve().parents[1] / "conf"
GPU_PRESETS = ("office-caltech10.toml", "domainnet.toml", "domainnet-60.toml", "camelyon17.toml")
NUM_CLASSES = 5


def _no_network(*args: Any, **kwargs: Any) -> None:
    raise AssertionError("tried to reach the network")


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any download or socket connection fails the test."""
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", _no_network)
    monkeypatch.setattr(torch.hub, "download_url_to_file", _no_network)
    monkeypatch.setattr(socket.socket, "connect", _no_network)


@pytest.fixture(autouse=True)
def torch_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty TORCH_HOME, so torch's hub cache is a temporary folder."""
    home = tmp_path / "torch-home"
    monkeypatch.setenv("TORCH_HOME", str(home))
    assert hub_cache_path() == home / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    return home


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Model builds on one CPU thread (the tests share 2 cores)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def imagenet_state() -> dict[str, torch.Tensor]:
    """An ImageNet-shaped ResNet-18 state dict (1000 classes) with its own seeded weights."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1234)
        return resnet18(weights=None).state_dict()


@pytest.fixture
def cached_checkpoint(imagenet_state: dict[str, torch.Tensor], torch_home: Path) -> Path:
    """The fake checkpoint where torchvision caches the real one, without num_batches_tracked as in old checkpoints."""
    path = hub_cache_path()
    path.parent.mkdir(parents=True)
    torch.save({k: v for k, v in imagenet_state.items() if not k.endswith("num_batches_tracked")}, path)
    return path


def settings(pretrained: str, image_size: int = 64, seed: int = 0, model: str = "resnet18") -> Settings:
    return Settings.from_run_config(
        {"model.name": model, "model.pretrained": pretrained, "data.image-size": image_size, "seed": seed}
    )


def resnet_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The classifier's ResNet tensors under torchvision's names (without the normalisation wrapper's prefix)."""
    return {name.split(".", 1)[1]: tensor for name, tensor in model.state_dict().items()}


def same_model(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))


def messages(caplog: pytest.LogCaptureFixture) -> str:
    return "\n".join(record.getMessage() for record in caplog.records)


def test_auto_loads_the_cached_imagenet_weights_except_the_head(
    cached_checkpoint: Path, imagenet_state: dict[str, torch.Tensor], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="flwr"):
        model = initial_classifier(settings("auto"), NUM_CLASSES)
    state = resnet_state(model)
    for name in ("conv1.weight", "bn1.running_mean", "layer3.1.conv2.weight", "layer4.1.bn2.bias"):
        assert torch.equal(state[name], imagenet_state[name])
    assert state["fc.weight"].shape == (NUM_CLASSES, 512)
    expected = f"ResNet-18: ImageNet weights from {cached_checkpoint} (random init kept for fc.weight, fc.bias)"
    assert expected in messages(caplog)


def test_small_images_keep_the_cifar_stem_random_and_say_so(
    cached_checkpoint: Path, imagenet_state: dict[str, torch.Tensor], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="flwr"):
        model = initial_classifier(settings("auto", image_size=32), NUM_CLASSES)
    state = resnet_state(model)
    random_init = resnet_state(build_classifier("resnet18", NUM_CLASSES, 32, seed=0))
    assert torch.equal(state["conv1.weight"], random_init["conv1.weight"])
    assert torch.equal(state["layer1.0.conv1.weight"], imagenet_state["layer1.0.conv1.weight"])
    assert "random init kept for conv1.weight, fc.weight, fc.bias" in messages(caplog)


def test_auto_with_an_empty_cache_falls_back_to_the_seeded_random_init(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="flwr"):
        model = initial_classifier(settings("auto"), NUM_CLASSES)
    assert same_model(model, build_classifier("resnet18", NUM_CLASSES, 64, seed=0))
    assert f"ResNet-18: random init (no ImageNet weights at {hub_cache_path()})" in messages(caplog)


def test_same_seed_same_model_and_the_seed_sets_the_new_head(cached_checkpoint: Path) -> None:
    first, again, other = (initial_classifier(settings("auto", seed=seed), NUM_CLASSES) for seed in (3, 3, 4))
    assert same_model(first, again)
    assert not torch.equal(resnet_state(first)["fc.weight"], resnet_state(other)["fc.weight"])
    assert torch.equal(resnet_state(first)["conv1.weight"], resnet_state(other)["conv1.weight"])


def test_a_safetensors_path_is_loaded(
    tmp_path: Path, imagenet_state: dict[str, torch.Tensor], caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "resnet18-imagenet.safetensors"
    save_file(imagenet_state, str(path))
    with caplog.at_level(logging.INFO, logger="flwr"):
        model = initial_classifier(settings(str(path)), NUM_CLASSES)
    name = "layer2.0.downsample.0.weight"
    assert torch.equal(resnet_state(model)[name], imagenet_state[name])
    assert f"ResNet-18: ImageNet weights from {path}" in messages(caplog)


def test_none_is_random_init_even_with_cached_weights(
    cached_checkpoint: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="flwr"):
        model = initial_classifier(settings("none"), NUM_CLASSES)
    assert same_model(model, build_classifier("resnet18", NUM_CLASSES, 64, seed=0))
    assert "ResNet-18: random init (config key 'model.pretrained' is \"none\")" in messages(caplog)


def test_a_missing_path_names_the_key_and_the_path(tmp_path: Path) -> None:
    path = tmp_path / "absent.pth"
    with pytest.raises(ConfigError, match="model.pretrained") as error:
        initial_classifier(settings(str(path)), NUM_CLASSES)
    assert str(path) in str(error.value)


def test_a_file_that_is_not_a_resnet18_names_the_key_and_the_path(tmp_path: Path) -> None:
    path = tmp_path / "other.safetensors"
    save_file({"encoder.weight": torch.zeros(2, 2)}, str(path))
    with pytest.raises(ConfigError, match="not a torchvision ResNet-18 state dict") as error:
        initial_classifier(settings(str(path)), NUM_CLASSES)
    assert "model.pretrained" in str(error.value) and str(path) in str(error.value)


def test_a_pth_that_needs_unpickling_is_refused(tmp_path: Path, imagenet_state: dict[str, torch.Tensor]) -> None:
    path = tmp_path / "pickled.pth"
    torch.save({**imagenet_state, "note": Fraction(1, 3)}, path)
    with pytest.raises(ConfigError, match="model.pretrained") as error:
        initial_classifier(settings(str(path)), NUM_CLASSES)
    assert str(path) in str(error.value)


@pytest.mark.parametrize("value", ["imagenet", "", "/weights/resnet18.bin"])
def test_bad_values_name_the_key(value: str) -> None:
    with pytest.raises(ConfigError, match="'model.pretrained'"):
        settings(value)


def test_cnn_ignores_the_setting_and_says_so(cached_checkpoint: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="flwr"):
        model = initial_classifier(settings("auto", image_size=16, model="cnn"), NUM_CLASSES)
    assert same_model(model, build_classifier("cnn", NUM_CLASSES, 16, seed=0))
    assert "cnn: config key 'model.pretrained' ('auto') has no effect" in messages(caplog)


@pytest.mark.parametrize("file", GPU_PRESETS)
def test_gpu_presets_use_imagenet_weights_when_cached(file: str) -> None:
    model = Settings.from_run_config(load_preset(CONF / file)).model
    assert (model.name, model.pretrained) == ("resnet18", "auto")
