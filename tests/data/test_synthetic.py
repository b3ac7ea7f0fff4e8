"""The built-in synthetic dataset: layout, counts, exact masks, determinism, atomic generation."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import bgad.data.synthetic as syn
from bgad.data.datasets import list_dataset_categories, load_category
from bgad.data.images import DatasetError, read_image, read_mask
from bgad.data.mvtec import list_categories, load_mvtec_category


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return syn.ensure_synthetic_dataset(tmp_path_factory.mktemp("syn") / "seed0", seed=0)


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_layout_counts_and_kinds(synth: Path) -> None:
    assert list_categories(synth) == ["weave", "widget"]
    info = json.loads((synth / "bgad_dataset.json").read_text())
    assert info["name"] == "synthetic" and info["has_pixel_masks"] is True and info["seed"] == 0
    expected = {
        "weave": ("texture", ["hole", "scratch", "stain"]),
        "widget": ("object", ["crack", "missing_part", "spot"]),
    }
    for cat, (kind, defects) in expected.items():
        data = load_mvtec_category(synth, cat, "synthetic")
        assert data.kind == kind and data.has_pixel_masks and data.dataset == "synthetic"
        assert data.defect_types == defects
        assert len(data.train) == syn.N_TRAIN == 40
        assert sum(1 for s in data.test if s.label == 0) == syn.N_TEST_GOOD == 10
        for d in defects:
            assert sum(1 for s in data.test if s.defect_type == d) == syn.N_PER_DEFECT == 6
        assert syn.SYNTHETIC_CATEGORIES[cat] == (kind, tuple(defects))


def test_images_and_masks(synth: Path) -> None:
    for cat in ["weave", "widget"]:
        data = load_mvtec_category(synth, cat, "synthetic")
        for s in (*data.train[:3], *data.test):
            img = read_image(s.image_path)
            assert img.shape == (256, 256, 3) and img.dtype == np.uint8
            if s.label:
                m = read_mask(s.mask_path, expected_size=(256, 256))
                area = int(m.sum())
                assert 80 <= area <= 0.1 * 256 * 256, (s.image_path, area)
                with Image.open(s.mask_path) as raw:
                    assert raw.mode == "L" and set(np.unique(np.asarray(raw)).tolist()) == {0, 255}


def test_defects_vary_in_position(synth: Path) -> None:
    data = load_mvtec_category(synth, "weave", "synthetic")
    centres = set()
    for s in data.test:
        if s.label:
            ys, xs = np.nonzero(read_mask(s.mask_path))
            centres.add((int(ys.mean()) // 16, int(xs.mean()) // 16))
    assert len(centres) >= 10


def test_defects_are_visible() -> None:
    """Inside the mask the defect image differs clearly from the same image without the defect."""
    for cat_index, spec in enumerate(syn._SPECS):
        for stream, defect in enumerate(spec.defects, start=2):
            for i in range(syn.N_PER_DEFECT):
                img, mask, clean = syn._render(spec, defect, 0, cat_index, stream, i)
                assert mask is not None and mask.sum() >= 80
                diff = np.abs(img.astype(np.float32) - clean)[mask].mean()
                assert diff > 30, (spec.name, defect, i, diff)
                unchanged = np.abs(img.astype(np.float32) - clean)[~mask].max()
                assert unchanged <= 0.5  # the mask is exact: nothing outside it changed


@pytest.fixture
def small_counts(monkeypatch: pytest.MonkeyPatch) -> None:
    """Generate a tiny version (for tests of the generation machinery, not of the content)."""
    monkeypatch.setattr(syn, "N_TRAIN", 3)
    monkeypatch.setattr(syn, "N_TEST_GOOD", 2)
    monkeypatch.setattr(syn, "N_PER_DEFECT", 2)


def test_second_call_returns_same_folder_without_regenerating(
    synth: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(*a, **k):  # pragma: no cover - must not run
        raise AssertionError("regenerated")

    monkeypatch.setattr(syn, "_generate", boom)
    assert syn.ensure_synthetic_dataset(synth, seed=0) == synth


def test_deterministic_same_seed_identical_bytes(synth: Path, tmp_path: Path) -> None:
    other = syn.ensure_synthetic_dataset(tmp_path / "again", seed=0)
    assert _files(other) == _files(synth)


def test_other_seed_differs(synth: Path, tmp_path: Path) -> None:
    other = syn.ensure_synthetic_dataset(tmp_path / "seed1", seed=1)
    a, b = _files(synth), _files(other)
    assert sorted(a) == sorted(b)
    assert a["weave/train/good/000.png"] != b["weave/train/good/000.png"]
    assert a["widget/ground_truth/spot/000_mask.png"] != b["widget/ground_truth/spot/000_mask.png"]


def test_wrong_seed_in_existing_folder(synth: Path) -> None:
    with pytest.raises(DatasetError, match="seed"):
        syn.ensure_synthetic_dataset(synth, seed=3)


def test_non_empty_foreign_folder_refused(tmp_path: Path) -> None:
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "file.txt").write_text("mine")
    with pytest.raises(DatasetError, match="not empty"):
        syn.ensure_synthetic_dataset(tmp_path / "x")
    assert (tmp_path / "x" / "file.txt").read_text() == "mine"


def test_existing_empty_folder_is_filled(tmp_path: Path, small_counts: None) -> None:
    (tmp_path / "empty").mkdir()
    root = syn.ensure_synthetic_dataset(tmp_path / "empty")
    assert (root / "bgad_dataset.json").is_file()


def test_failure_leaves_no_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, small_counts: None
) -> None:
    real = syn._save_png
    calls = {"n": 0}

    def flaky(array, path):
        calls["n"] += 1
        if calls["n"] == 20:
            raise OSError("disk full (simulated)")
        real(array, path)

    monkeypatch.setattr(syn, "_save_png", flaky)
    with pytest.raises(OSError, match="simulated"):
        syn.ensure_synthetic_dataset(tmp_path / "final")
    assert calls["n"] == 20
    assert list(tmp_path.iterdir()) == []  # neither the final folder nor a temporary one remains
    monkeypatch.setattr(syn, "_save_png", real)
    root = syn.ensure_synthetic_dataset(tmp_path / "final")
    assert len(list((root / "weave" / "train" / "good").iterdir())) == 3


def test_concurrent_callers(tmp_path: Path, small_counts: None) -> None:
    results: list[Path] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            results.append(syn.ensure_synthetic_dataset(tmp_path / "shared", seed=2))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert results == [tmp_path / "shared"] * 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shared"]  # the losers cleaned up
    assert len(list((tmp_path / "shared" / "widget" / "test" / "crack").iterdir())) == 2


def test_default_location_and_registry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, synth: Path, small_counts: None
) -> None:
    monkeypatch.setenv("BGAD_CACHE_DIR", str(tmp_path))
    assert syn.synthetic_dataset_dir(0) == tmp_path.resolve() / "synthetic" / "v1-seed0"
    # registry with an explicit root (already generated: fast)
    data = load_category("synthetic", "widget", synth)
    assert data.dataset == "synthetic" and data.kind == "object"
    assert list_dataset_categories("synthetic", synth) == ["weave", "widget"]
    # default root: generated under the cache dir
    assert load_category("synthetic", "weave").root == tmp_path.resolve() / "synthetic" / "v1-seed0"
