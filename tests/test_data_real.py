"""The real data set loaders (Office-Caltech10, DomainNet, Camelyon17, Hugging Face) on tiny fixtures."""

from __future__ import annotations

from pathlib import Path

import datasets
import pytest
import torch
from PIL import Image

from warmfed_flwr.config import DATASETS, NODE_LOCAL, DataSettings, Settings
from warmfed_flwr.data import DOMAIN_SET_LOADERS, DataError, domain_names, load_client_data, load_domain_set, num_clients
from warmfed_flwr.data.domainnet import DOMAINS as DOMAINNET_DOMAINS
from warmfed_flwr.data.domainnet import FEDBN_CLASSES
from warmfed_flwr.data.huggingface import huggingface_domain_set
from warmfed_flwr.data.images import decode
from warmfed_flwr.data.office_caltech10 import DOMAINS as OFFICE_DOMAINS


def data_settings(name: str, root: Path | str, **overrides: object) -> DataSettings:
    run_config = {"data.name": name, "data.root": str(root), "data.image-size": 8, "data.min-train-images": 1}
    run_config |= {f"data.{key.replace('_', '-')}": value for key, value in overrides.items()}
    return Settings.from_run_config(run_config).data


def save(path: Path, shade: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (12, 12), (shade, 255 - shade, 0)).save(path)


def test_office_caltech10_four_domains_in_fixed_order(tmp_path: Path) -> None:
    for domain in OFFICE_DOMAINS:
        for name in ("mug", "bike"):
            for index in range(4):
                save(tmp_path / domain / name / f"{index}.jpg", 40 * index)
    (tmp_path / "readme_folder").mkdir()  # a stray folder is not a domain
    settings = data_settings("office-caltech10", tmp_path, test_fraction=0.5)
    assert domain_names(settings) == OFFICE_DOMAINS
    data = load_domain_set(settings)
    assert data.class_names == ("bike", "mug")
    assert all(len(domain.train) == len(domain.test) == 4 for domain in data.domains)
    assert load_client_data(settings, 2).domain == "dslr"


def test_office_caltech10_names_the_missing_domain(tmp_path: Path) -> None:
    save(tmp_path / "amazon" / "mug" / "0.jpg", 0)
    with pytest.raises(DataError, match="lacks the domain folder.*caltech, dslr, webcam.*FedBN"):
        load_domain_set(data_settings("office-caltech10", tmp_path))


def domainnet_tree(root: Path, with_split_files: bool) -> None:
    for domain in DOMAINNET_DOMAINS:
        lines = {"train": [], "test": []}
        for name in ("bird", "zebra", "airplane"):
            for index in range(4):
                relative = f"{domain}/{name}/{domain}_{index}.jpg"
                save(root / relative, 60 * index)
                lines["train" if index < 3 else "test"].append(f"{relative} {index}")
        if with_split_files:
            for part, listed in lines.items():
                (root / f"{domain}_{part}.txt").write_text("\n".join(listed) + "\n")


def test_domainnet_uses_official_split_files_and_the_fedbn_classes(tmp_path: Path) -> None:
    domainnet_tree(tmp_path, with_split_files=True)
    data = load_domain_set(data_settings("domainnet", tmp_path))
    assert data.class_names == FEDBN_CLASSES  # airplane is not among them
    assert tuple(domain.name for domain in data.domains) == DOMAINNET_DOMAINS
    for domain in data.domains:
        assert domain.train.class_counts(10)[0] == 3 and domain.test.class_counts(10)[0] == 1  # bird
        assert domain.train.class_counts(10)[9] == 3  # zebra
        assert len(domain.train) == 6 and len(domain.test) == 2


def test_domainnet_without_split_files_splits_each_domain_and_honours_classes(tmp_path: Path) -> None:
    domainnet_tree(tmp_path, with_split_files=False)
    data = load_domain_set(data_settings("domainnet", tmp_path, classes="zebra,airplane", test_fraction=0.5))
    assert data.class_names == ("airplane", "zebra")
    assert all(domain.train.class_counts(2) == [2, 2] == domain.test.class_counts(2) for domain in data.domains)


def test_domainnet_with_half_a_split_pair_is_an_error(tmp_path: Path) -> None:
    domainnet_tree(tmp_path, with_split_files=True)
    (tmp_path / "sketch_test.txt").unlink()
    with pytest.raises(DataError, match="sketch_test.txt is missing"):
        load_domain_set(data_settings("domainnet", tmp_path))


def camelyon_tree(root: Path) -> None:
    """Hospitals 0 and 2: hospital 0 has official train (0) and val (1) rows, hospital 2 only train rows."""
    rows = [",patient,node,x_coord,y_coord,tumor,slide,center,split"]
    for center in (0, 2):
        for index in range(8):
            patient, node, x, y, tumor = 10 + center, index % 2, 100 * index, 7, index % 2
            split = 1 if center == 0 and index >= 6 else 0
            rows.append(f"{len(rows) - 1},{patient},{node},{x},{y},{tumor},{patient},{center},{split}")
            folder = f"patient_{patient:03d}_node_{node}"
            save(root / "patches" / folder / f"patch_{folder}_x_{x}_y_{y}.png", 200 * tumor)
    (root / "metadata.csv").write_text("\n".join(rows) + "\n")


def test_camelyon17_one_domain_per_hospital_with_the_official_split(tmp_path: Path) -> None:
    camelyon_tree(tmp_path)
    data = load_domain_set(data_settings("camelyon17", tmp_path, test_fraction=0.25))
    assert data.class_names == ("normal", "tumor")
    official, fallback = data.domains
    assert (official.name, fallback.name) == ("hospital0", "hospital2")
    assert (len(official.train), len(official.test)) == (6, 2)
    assert (len(fallback.train), len(fallback.test)) == (6, 2)
    assert fallback.test.class_counts(2) == [1, 1]
    train, skipped = decode(official.train, 8)
    assert not skipped
    tumour_red = train.float_images()[train.labels == 1][:, 0].mean()
    normal_red = train.float_images()[train.labels == 0][:, 0].mean()
    assert tumour_red > normal_red + 0.5  # each label got its own patch file


def test_camelyon17_without_metadata_explains_how_to_get_it(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"metadata.csv does not exist.*wilds"):
        load_domain_set(data_settings("camelyon17", tmp_path))


def huggingface_folder(root: Path, with_test_split: bool) -> None:
    features = datasets.Features(
        {
            "img": datasets.Image(),
            "label": datasets.ClassLabel(names=["cat", "dog"]),
            "domain": datasets.Value("string"),
        }
    )
    splits = {"train": 4, "test": 2} if with_test_split else {"train": 4}
    for split, per_class in splits.items():
        rows = {"img": [], "label": [], "domain": []}
        for domain in ("photo", "art"):
            for label in (0, 1):
                for _ in range(per_class):
                    rows["img"].append(Image.new("RGB", (10, 10), (255 * label, 0, 0)))
                    rows["label"].append(label)
                    rows["domain"].append(domain)
        root.mkdir(parents=True, exist_ok=True)
        datasets.Dataset.from_dict(rows, features=features).to_parquet(str(root / f"{split}.parquet"))


@pytest.mark.parametrize("with_test_split", [True, False])
def test_huggingface_domains_come_from_the_domain_column(tmp_path: Path, with_test_split: bool) -> None:
    huggingface_folder(tmp_path / "hub", with_test_split)
    settings = data_settings("huggingface", tmp_path / "hub", test_fraction=0.5)
    data = huggingface_domain_set(settings, cache_dir=str(tmp_path / "cache"))
    assert data.class_names == ("cat", "dog")
    assert tuple(domain.name for domain in data.domains) == ("art", "photo")
    for domain in data.domains:
        assert domain.train.class_counts(2) == ([4, 4] if with_test_split else [2, 2])
        assert domain.test.class_counts(2) == [2, 2]
        train, skipped = decode(domain.train, 8)
        assert not skipped and len(train) == len(domain.train)
        dogs = train.float_images()[train.labels == 1]
        assert torch.allclose(dogs[:, 0], torch.ones_like(dogs[:, 0]))  # labels stay with their images


def test_huggingface_without_a_domain_column_names_it(tmp_path: Path) -> None:
    rows = {"image": [Image.new("RGB", (4, 4))] * 4, "label": [0, 1, 0, 1]}
    (tmp_path / "hub").mkdir()
    features = datasets.Features({"image": datasets.Image(), "label": datasets.Value("int64")})
    datasets.Dataset.from_dict(rows, features=features).to_parquet(str(tmp_path / "hub" / "train.parquet"))
    with pytest.raises(DataError, match="lacks the column.*domain"):
        huggingface_domain_set(data_settings("huggingface", tmp_path / "hub"), cache_dir=str(tmp_path / "cache"))


def test_huggingface_unknown_id_is_a_data_error(tmp_path: Path) -> None:
    settings = data_settings("huggingface", tmp_path / "no-such-dataset")
    with pytest.raises(DataError, match="cannot load"):
        huggingface_domain_set(settings, cache_dir=str(tmp_path / "cache"))


def test_every_configurable_data_set_has_a_loader() -> None:
    assert set(DOMAIN_SET_LOADERS) == set(DATASETS) - {NODE_LOCAL}  # node-local data is read on each SuperNode


def test_node_local_data_cannot_be_loaded_or_counted_centrally() -> None:
    with pytest.raises(DataError, match="node-local.*data-root.*docs/deployment.md"):
        num_clients(Settings.from_run_config({"data.name": "node-local"}).data)
