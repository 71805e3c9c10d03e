"""Node-local data: a SuperNode reads only the folder its node config names, with labels mapped to the agreed classes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from flwr.app import Context, Message, Metadata, RecordDict
from flwr.common.config import get_fused_config_from_dir
from PIL import Image

from warmfed_flwr.client.context import client_data
from warmfed_flwr.client.discovery import handle_info
from warmfed_flwr.config import Settings
from warmfed_flwr.data import DataError
from warmfed_flwr.data.node_local import node_folder, to_agreed_labels
from warmfed_flwr.run.federation import AGREED_CLASSES_KEY, ClientInfo, agreed_classes_record
from warmfed_flwr.server import agreed_class_names

ROOT = Path(__file__).resolve().parents[1]
RUN = {"data.name": "node-local", "data.image-size": 8, "data.min-train-images": 2, "data.test-fraction": 0.25}
SHADES = {"cat": (250, 0, 0), "dog": (0, 250, 0), "owl": (0, 0, 250)}


def save(path: Path, colour: tuple[int, int, int]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (12, 12), colour).save(path)


def node_tree(root: Path, classes: tuple[str, ...], per_class: int = 4) -> Path:
    for name in classes:
        for index in range(per_class):
            save(root / name / f"{index}.png", SHADES[name])
    return root


def context(root: Path | None, partition_id: int = 0, **extra: str) -> Context:
    node_config: dict[str, bool | float | int | str] = {"partition-id": partition_id, "num-partitions": 2, **extra}
    if root is not None:
        node_config["data-root"] = str(root)
    run_config = get_fused_config_from_dir(ROOT, RUN)  # what Flower gives the ClientApp
    return Context(run_id=1, node_id=7, node_config=node_config, state=RecordDict(), run_config=run_config)


def message(message_type: str = "query.info", agreed: tuple[str, ...] | None = None) -> Message:
    """A message from the server as a ClientApp receives it (after discovery, with the agreed class list)."""
    content = RecordDict({AGREED_CLASSES_KEY: agreed_classes_record(agreed)} if agreed is not None else {})
    metadata = Metadata(run_id=1, message_id="m1", src_node_id=1, dst_node_id=7, reply_to_message_id="",
                        group_id="", created_at=0.0, ttl=60.0, message_type=message_type)
    return Message(content, metadata=metadata)


def test_folder_is_listed_and_split_without_decoding(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = node_tree(tmp_path / "mine", ("dog", "cat"))
    monkeypatch.setattr(Image, "open", lambda *a, **k: pytest.fail("discovery opened an image"))
    reply = handle_info(message(), context(root, domain="ward-3"))
    info = reply.content["info"]
    assert list(info["class-names"]) == ["cat", "dog"] and info["domain"] == "ward-3"
    assert (info["num-train"], info["num-test"]) == (6, 2) and info["num-partitions"] == 2


def test_own_train_and_test_folders_are_used_as_they_are(tmp_path: Path) -> None:
    node_tree(tmp_path / "mine" / "train", ("cat", "owl"), per_class=3)
    node_tree(tmp_path / "mine" / "test", ("cat",), per_class=2)
    folder = node_folder(str(tmp_path / "mine"), 0.25, 0)
    assert folder.class_names == ("cat", "owl")
    assert folder.train.class_counts(2) == [3, 3] and folder.test.class_counts(2) == [2, 0]


def test_labels_follow_the_agreed_class_list(tmp_path: Path) -> None:
    root = node_tree(tmp_path / "mine", ("owl", "cat"))
    agreed = ("cat", "dog", "owl")
    msg = message("train.dsd", agreed)
    data = client_data(Settings.from_run_config(RUN), context(root, partition_id=1), msg)
    assert data.class_names == agreed and data.domain == "node-1"
    assert data.train.images.dtype == torch.uint8
    assert data.train.class_counts(3)[1] == 0 and sum(data.train.class_counts(3)) + len(data.test) == 8
    for image, label in zip(data.train.float_images(), data.train.labels):
        expected = torch.tensor(SHADES[agreed[int(label)]], dtype=torch.float32) / 255.0
        assert torch.allclose(image.mean(dim=(1, 2)), expected, atol=0.02)  # each image kept its own class
    with pytest.raises(DataError, match=r"classes \['owl'\] are not among the agreed classes"):
        to_agreed_labels(torch.tensor([0, 1]), ("cat", "owl"), ("cat", "dog"), "client 1")


def test_a_message_without_the_agreed_class_list_is_named(tmp_path: Path) -> None:
    root = node_tree(tmp_path / "mine", ("cat", "dog"))
    with pytest.raises(ValueError, match="'train.dsd' carries no agreed class names"):
        client_data(Settings.from_run_config(RUN), context(root), message("train.dsd"))


def test_a_node_local_run_needs_data_root_and_a_readable_folder(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="node config has no 'data-root'"):
        handle_info(message(), context(None))
    with pytest.raises(DataError, match="does not exist"):
        handle_info(message(), context(tmp_path / "nowhere"))
    (tmp_path / "empty" / "cat").mkdir(parents=True)
    with pytest.raises(DataError, match="has no images"):
        handle_info(message(), context(tmp_path / "empty"))


def info(partition_id: int, classes: tuple[str, ...]) -> ClientInfo:
    return ClientInfo(node_id=partition_id, partition_id=partition_id, num_partitions=2, domain="d", num_train=4,
                      num_test=1, class_names=classes)


def test_server_agrees_on_the_sorted_union_for_node_local_data_only() -> None:
    clients = [info(0, ("dog", "cat")), info(1, ("cat", "owl"))]
    assert agreed_class_names(clients, node_local=True) == ("cat", "dog", "owl")
    with pytest.raises(Exception, match="disagree on the class names"):
        agreed_class_names(clients)
    same = [info(0, ("9", "1")), info(1, ("9", "1"))]
    assert agreed_class_names(same) == ("9", "1")  # a shared data set keeps its own order
