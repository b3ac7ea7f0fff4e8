"""MVTec-layout reader and the dataset registry on tiny trees built in tmp_path."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bgad.data.datasets import DATASETS, list_dataset_categories, load_category
from bgad.data.images import DatasetError, read_image, read_mask
from bgad.data.mvtec import list_categories, load_mvtec_category
from bgad.registry import UnknownNameError


def _img(path: Path, value: int = 100, size: tuple[int, int] = (8, 6)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (value, value, value)).save(path)


def _mask(path: Path, size: tuple[int, int] = (8, 6)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    m = np.zeros((size[1], size[0]), np.uint8)
    m[1:3, 1:3] = 255
    Image.fromarray(m).save(path)


def make_tree(root: Path, category: str = "bottle", masks: bool = True) -> Path:
    c = root / category
    for name in ["003.png", "001.png", "002.png"]:  # created out of order on purpose
        _img(c / "train" / "good" / name)
    for name in ["001.png", "000.png"]:
        _img(c / "test" / "good" / name)
    for defect, names in {"scratch": ["002.png", "000.png"], "broken": ["000.JPG"]}.items():
        for name in names:
            _img(c / "test" / defect / name, 200)
            if masks:
                _mask(c / "ground_truth" / defect / f"{Path(name).stem}_mask.png")
    return root


def test_happy_path_sorted(tmp_path: Path) -> None:
    root = make_tree(tmp_path)
    make_tree(tmp_path, "carpet")
    data = load_mvtec_category(root, "bottle")
    assert data.dataset == "mvtec" and data.category == "bottle" and data.root == root
    assert data.kind == "object" and data.has_pixel_masks
    assert [s.image_path.name for s in data.train] == ["001.png", "002.png", "003.png"]
    assert all(s.split == "train" and s.label == 0 and s.defect_type == "good" for s in data.train)
    assert [(s.defect_type, s.image_path.name) for s in data.test] == [
        ("broken", "000.JPG"),
        ("good", "000.png"),
        ("good", "001.png"),
        ("scratch", "000.png"),
        ("scratch", "002.png"),
    ]
    assert [s.label for s in data.test] == [1, 0, 0, 1, 1]
    for s in data.test:
        if s.label:
            assert (
                s.mask_path
                == root / "bottle" / "ground_truth" / s.defect_type / f"{s.image_path.stem}_mask.png"
            )
            m = read_mask(s.mask_path, expected_size=read_image(s.image_path).shape[1::-1])
            assert m.sum() == 4
        else:
            assert s.mask_path is None
    assert data.defect_types == ["broken", "scratch"]
    assert load_mvtec_category(root, "carpet").kind == "texture"
    assert list_categories(root) == ["bottle", "carpet"]
    # deterministic identity
    assert data.manifest_sha256() == load_mvtec_category(root, "bottle").manifest_sha256()


def test_hidden_files_are_skipped(tmp_path: Path) -> None:
    root = make_tree(tmp_path)
    (root / "bottle" / "train" / "good" / ".DS_Store").write_text("x")
    (root / ".hidden").mkdir()
    assert len(load_mvtec_category(root, "bottle").train) == 3


def test_image_level_only_tree(tmp_path: Path) -> None:
    root = make_tree(tmp_path, masks=False)
    data = load_mvtec_category(root, "bottle", "brainmri")
    assert not data.has_pixel_masks and data.dataset == "brainmri"
    assert all(s.mask_path is None for s in data.test)
    # an explicit override ignores a ground_truth folder
    root2 = make_tree(tmp_path / "b")
    assert not load_mvtec_category(root2, "bottle", "elpv", has_pixel_masks=False).has_pixel_masks


def test_dataset_json_kind_and_masks(tmp_path: Path) -> None:
    root = make_tree(tmp_path, "fabric", masks=False)
    info = {"name": "x", "has_pixel_masks": False, "categories": {"fabric": {"kind": "texture"}}}
    (root / "bgad_dataset.json").write_text(json.dumps(info))
    data = load_mvtec_category(root, "fabric", "aitex")
    assert data.kind == "texture" and not data.has_pixel_masks


def test_dataset_json_invalid(tmp_path: Path) -> None:
    root = make_tree(tmp_path)
    (root / "bgad_dataset.json").write_text("{not json")
    with pytest.raises(DatasetError, match="bgad_dataset.json"):
        load_mvtec_category(root, "bottle")
    (root / "bgad_dataset.json").write_text(json.dumps({"categories": {"bottle": {"kind": "round"}}}))
    with pytest.raises(DatasetError, match="kind"):
        load_mvtec_category(root, "bottle")


def test_json_says_masks_but_no_ground_truth(tmp_path: Path) -> None:
    root = make_tree(tmp_path, masks=False)
    (root / "bgad_dataset.json").write_text(json.dumps({"has_pixel_masks": True}))
    with pytest.raises(DatasetError, match="ground_truth"):
        load_mvtec_category(root, "bottle")


def test_missing_root(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"nowhere.*bgad-bench data (download|prepare) mvtec"):
        load_mvtec_category(tmp_path / "nowhere", "bottle")
    with pytest.raises(DatasetError, match=r"bgad-bench data prepare aitex"):
        list_categories(tmp_path / "nowhere", dataset="aitex")


def test_empty_root(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="no category folders"):
        list_categories(tmp_path)


def test_unknown_category_lists_known(tmp_path: Path) -> None:
    root = make_tree(tmp_path)
    make_tree(tmp_path, "cable")
    with pytest.raises(DatasetError, match=r"'bottel'.*bottle, cable"):
        load_mvtec_category(root, "bottel")


def test_missing_train_good(tmp_path: Path) -> None:
    root = make_tree(tmp_path)
    shutil.rmtree(root / "bottle" / "train" / "good")
    with pytest.raises(DatasetError, match=r"train/good"):
        load_mvtec_category(root, "bottle")


def test_empty_train_good(tmp_path: Path) -> None:
    root = make_tree(tmp_path)
    for p in (root / "bottle" / "train" / "good").iterdir():
        p.unlink()
    with pytest.raises(DatasetError, match=r"train/good holds no images"):
        load_mvtec_category(root, "bottle")


def test_unexpected_train_folder(tmp_path: Path) -> None:
    root = make_tree(tmp_path)
    _img(root / "bottle" / "train" / "bad" / "x.png")
    with pytest.raises(DatasetError, match=r"train/bad"):
        load_mvtec_category(root, "bottle")


def test_missing_test(tmp_path: Path) -> None:
    root = make_tree(tmp_path)
    shutil.rmtree(root / "bottle" / "test")
    with pytest.raises(DatasetError, match=r"bottle/test"):
        load_mvtec_category(root, "bottle")


@pytest.mark.parametrize(
    "rel",
    [
        "train/good/notes.txt",
        "test/good/thumbs.db",
        "test/scratch/004.gif",
        "test/scratch/noext",
        "test/readme.md",
    ],
)
def test_unexpected_file_is_named(tmp_path: Path, rel: str) -> None:
    root = make_tree(tmp_path)
    (root / "bottle" / rel).write_text("x")
    with pytest.raises(DatasetError, match=Path(rel).name.replace(".", r"\.")):
        load_mvtec_category(root, "bottle")


def test_subfolder_inside_image_folder(tmp_path: Path) -> None:
    root = make_tree(tmp_path)
    _img(root / "bottle" / "test" / "scratch" / "nested" / "a.png")
    with pytest.raises(DatasetError, match=r"scratch/nested"):
        load_mvtec_category(root, "bottle")


def test_defect_without_mask_is_named(tmp_path: Path) -> None:
    root = make_tree(tmp_path)
    (root / "bottle" / "ground_truth" / "scratch" / "002_mask.png").unlink()
    with pytest.raises(DatasetError, match=r"test/scratch/002\.png.*002_mask\.png"):
        load_mvtec_category(root, "bottle")


def test_registry_loaders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert {"synthetic", "mvtec", "aitex", "elpv", "brainmri", "headct", "btad"} <= set(DATASETS.names())
    root = make_tree(tmp_path / "brainmri", "brain")
    data = load_category("brainmri", "brain", root)
    assert data.dataset == "brainmri" and not data.has_pixel_masks
    assert load_category("mvtec", "brain", root).has_pixel_masks
    assert list_dataset_categories("headct", root) == ["brain"]
    # default root: data_dir()/<name>
    monkeypatch.setenv("BGAD_DATA_DIR", str(tmp_path))
    assert load_category("brainmri", "brain").root == tmp_path / "brainmri"
    with pytest.raises(DatasetError, match=r"bgad-bench data prepare elpv"):
        load_category("elpv", "cell")
    with pytest.raises(UnknownNameError, match="Did you mean 'mvtec'"):
        load_category("mvtek", "bottle")
