"""BTAD native-layout reader, MVTec-layout copies, and prepare_btad / prepare_mvtec from archives."""

from __future__ import annotations

import io
import json
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bgad.data import archives
from bgad.data.archives import prepare_btad, prepare_mvtec
from bgad.data.btad import list_btad_categories, load_btad_category
from bgad.data.download import ChecksumError
from bgad.data.images import DatasetError
from bgad.data.manifest import read_manifest

# 01 and 03 images .bmp, 02 .png; masks .png for 01/02, .bmp for 03 (as distributed)
EXT = {"01": (".bmp", ".png"), "02": (".png", ".png"), "03": (".bmp", ".bmp")}


def build_btad(root: Path, n_train: int = 4, n_ok: int = 2, n_ko: int = 3) -> Path:
    for cat, (iext, mext) in EXT.items():
        c = root / cat
        for sub in ("train/ok", "test/ok", "test/ko", "ground_truth/ko"):
            (c / sub).mkdir(parents=True)
        for i in range(n_train):
            Image.new("RGB", (32, 24), (i, 10, 20)).save(c / "train/ok" / f"{i:04d}{iext}")
        for i in range(n_ok):
            Image.new("RGB", (32, 24), (i, 30, 20)).save(c / "test/ok" / f"{i:04d}{iext}")
        for i in range(n_ko):
            Image.new("RGB", (32, 24), (i, 90, 20)).save(c / "test/ko" / f"{i:04d}{iext}")
            m = np.zeros((24, 32), np.uint8)
            m[2:6, 3:9] = 255
            Image.fromarray(m).save(c / "ground_truth/ko" / f"{i:04d}{mext}")
    return root


def test_native_layout(tmp_path):
    root = build_btad(tmp_path / "btad")
    assert list_btad_categories(root) == ["01", "02", "03"]
    d = load_btad_category(root, "03")
    assert d.dataset == "btad" and d.has_pixel_masks
    assert len(d.train) == 4 and len(d.test) == 5
    assert d.defect_types == ["ko"]
    ko = [s for s in d.test if s.is_anomalous]
    assert all(s.mask_path is not None and s.mask_path.suffix == ".bmp" for s in ko)
    assert {s.defect_type for s in d.test if not s.is_anomalous} == {"good"}
    assert load_btad_category(root, "01").test[-1].mask_path.suffix == ".png"


def test_native_missing_mask_and_bad_files(tmp_path):
    root = build_btad(tmp_path / "btad")
    (root / "02/ground_truth/ko/0001.png").unlink()
    with pytest.raises(DatasetError, match=r"no mask.*0001.png"):
        load_btad_category(root, "02")
    (root / "01/train/ok/readme.txt").write_text("x")
    with pytest.raises(DatasetError, match="readme.txt"):
        load_btad_category(root, "01")
    with pytest.raises(DatasetError, match="unknown BTAD category"):
        load_btad_category(root, "04")


def test_nested_root_hint(tmp_path):
    build_btad(tmp_path / "btad" / "BTech_Dataset_transformed")
    with pytest.raises(DatasetError, match="one level down"):
        list_btad_categories(tmp_path / "btad")


def test_mvtec_layout_copy(tmp_path):
    root = tmp_path / "btad_mvtec"
    c = root / "01"
    for sub in ("train/good", "test/good", "test/ko", "ground_truth/ko"):
        (c / sub).mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(c / "train/good/0000.png")
    Image.new("RGB", (8, 8)).save(c / "test/good/0000.png")
    Image.new("RGB", (8, 8)).save(c / "test/ko/0001.png")
    Image.new("L", (8, 8), 255).save(c / "ground_truth/ko/0001_mask.png")
    d = load_btad_category(root, "01")
    assert d.dataset == "btad" and len(d.train) == 1 and d.test[-1].mask_path.name == "0001_mask.png"


def _zip_tree(src: Path, zpath: Path, prefix: str) -> Path:
    with zipfile.ZipFile(zpath, "w") as zf:
        for p in sorted(src.rglob("*")):
            if p.is_file():
                zf.write(p, f"{prefix}/{p.relative_to(src).as_posix()}")
    return zpath


def test_prepare_btad_from_zip(tmp_path, monkeypatch):
    build_btad(tmp_path / "src")
    z = _zip_tree(tmp_path / "src", tmp_path / "btad.zip", "BTech_Dataset_transformed")
    with pytest.raises(ChecksumError, match="sha256"):
        prepare_btad(z, tmp_path / "data" / "btad")
    with pytest.raises(DatasetError, match="official counts"):
        prepare_btad(z, tmp_path / "data" / "btad", check_sha256=False)
    assert not (tmp_path / "data" / "btad").exists()
    monkeypatch.setattr(archives, "BTAD_TRAIN_COUNTS", {"01": 4, "02": 4, "03": 4})
    root = prepare_btad(z, tmp_path / "data" / "btad", check_sha256=False)
    assert sorted(p.name for p in root.iterdir()) == ["01", "02", "03", "bgad_dataset.json", "manifest.csv"]
    rows = read_manifest(root)
    assert len(rows) == 3 * (4 + 2 + 3)
    assert sum(1 for r in rows if r.mask) == 9
    info = json.loads((root / "bgad_dataset.json").read_text())
    assert info["name"] == "btad" and info["has_pixel_masks"]
    assert prepare_btad(z, tmp_path / "data" / "btad", check_sha256=False) == root  # idempotent


def _mvtec_tar(tmp_path: Path, counts: dict[str, tuple[int, int, int]]) -> Path:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:xz") as tf:

        def add(name: str, img: Image.Image) -> None:
            b = io.BytesIO()
            img.save(b, format="PNG")
            info = tarfile.TarInfo(name)
            info.size = b.tell()
            b.seek(0)
            tf.addfile(info, b)

        for cat, (tr, te, good) in counts.items():
            for i in range(tr):
                add(f"{cat}/train/good/{i:03d}.png", Image.new("RGB", (8, 8), (i, 0, 0)))
            for i in range(good):
                add(f"{cat}/test/good/{i:03d}.png", Image.new("RGB", (8, 8), (0, i, 0)))
            for i in range(te - good):
                add(f"{cat}/test/crack/{i:03d}.png", Image.new("RGB", (8, 8), (0, 0, i)))
                add(f"{cat}/ground_truth/crack/{i:03d}_mask.png", Image.new("L", (8, 8), 255))
        info = tarfile.TarInfo("license.txt")
        info.size = 2
        tf.addfile(info, io.BytesIO(b"cc"))
    p = tmp_path / "mvtec_anomaly_detection.tar.xz"
    p.write_bytes(buf.getvalue())
    return p


def test_prepare_mvtec_from_tar(tmp_path, monkeypatch):
    counts = {"bottle": (3, 3, 1), "carpet": (2, 2, 1)}
    archive = _mvtec_tar(tmp_path, counts)
    with pytest.raises(DatasetError, match="official counts"):
        prepare_mvtec(archive, tmp_path / "mvtec", check_sha256=False)
    monkeypatch.setattr(archives, "MVTEC_COUNTS", counts)
    monkeypatch.setattr(archives, "MVTEC_CATEGORIES", tuple(counts))
    root = prepare_mvtec(archive, tmp_path / "mvtec", check_sha256=False)
    info = json.loads((root / "bgad_dataset.json").read_text())
    assert info["categories"] == {"bottle": {"kind": "object"}, "carpet": {"kind": "texture"}}
    assert len(read_manifest(root)) == 10
    assert (root / "license.txt").is_file()
