"""Converters (AITEX, ELPV, BrainMRI, HeadCT) on small synthetic raw trees that copy the raw layouts, quirks included.

The builders here are also used by test_verify.py and test_data_cli.py.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.model_selection import train_test_split

from bgad.data.convert import prepare_aitex, prepare_brainmri, prepare_elpv, prepare_headct, split_normals
from bgad.data.images import DatasetError
from bgad.data.manifest import read_manifest
from bgad.data.mvtec import load_mvtec_category

RNG = np.random.default_rng(0)


def _grey(w: int, h: int, seed: int = 0) -> Image.Image:
    g = np.random.default_rng(seed).integers(60, 90, size=(h, w), dtype=np.uint8)
    return Image.fromarray(g, mode="L")


def _aa_mask(w: int, h: int, boxes: list[tuple[int, int, int, int]], mode: str = "L") -> Image.Image:
    """An anti-aliased mask like AITEX's: 255 inside each box, a grey ramp (1..127) one pixel around it."""
    m = np.zeros((h, w), dtype=np.uint8)
    for x0, y0, x1, y1 in boxes:
        m[max(y0 - 1, 0) : y1 + 1, max(x0 - 1, 0) : x1 + 1] = 60
        m[y0:y1, x0:x1] = 255
    img = Image.fromarray(m, mode="L")
    if mode == "LA":
        img = Image.merge("LA", (img, Image.new("L", img.size, 255)))
    return img


def build_aitex(raw: Path) -> Path:
    """AITEX raw tree at real size (4096x256), with every known quirk.

    Normal: 2 fabric folders x 2 images, plus the stray 0018_00_01.png -> 5 images = 80 tiles.
    Defects: 0001_002_00 (mask with two boxes: tiles 0 and 5; the ramp of box 2 touches tile 4 but only
    with values < 128), 0044_019_04 (_mask1 tile 2 + _mask2 tile 10, LA mode), 0100_025_08 (no mask),
    unused/0094_027_05 (3796 wide) with its mask.
    """
    w, h = 4096, 256
    for i, fab in enumerate(["2306881-210020u", "2608691-202020u"]):
        d = raw / "NoDefect_images" / fab
        d.mkdir(parents=True)
        for j in range(2):
            _grey(w, h, 10 * i + j).save(d / f"{j + 1:04d}_000_0{i}.png")
    _grey(w, h, 99).save(raw / "NoDefect_images" / "2608691-202020u" / "0018_00_01.png")
    dd = raw / "Defect_images"
    md = raw / "Mask_images"
    (dd / "unused").mkdir(parents=True)
    md.mkdir()
    _grey(w, h, 1).save(dd / "0001_002_00.png")
    _aa_mask(w, h, [(10, 10, 40, 40), (5 * 256 + 1, 100, 5 * 256 + 30, 120)]).save(
        md / "0001_002_00_mask.png"
    )
    _grey(w, h, 2).save(dd / "0044_019_04.png")
    _aa_mask(w, h, [(2 * 256 + 5, 5, 2 * 256 + 20, 20)], "LA").save(md / "0044_019_04_mask1.png")
    _aa_mask(w, h, [(10 * 256 + 5, 5, 10 * 256 + 20, 20)], "LA").save(md / "0044_019_04_mask2.png")
    _grey(w, h, 3).save(dd / "0100_025_08.png")
    _grey(3796, h, 4).save(dd / "unused" / "0094_027_05.png")
    _aa_mask(3796, h, [(5, 5, 20, 20)]).save(md / "0094_027_05_mask.png")
    return raw


def build_brainmri(raw: Path, n_no: int = 8, n_yes: int = 5) -> Path:
    exts = [".jpg", ".JPG", ".jpeg", ".png"]
    for folder, n in (("no", n_no), ("yes", n_yes)):
        (raw / folder).mkdir(parents=True)
        for i in range(n):
            ext = exts[i % len(exts)]
            size = (40 + i, 30 + 2 * i)
            img = Image.new("RGB" if i % 2 else "L", size, (i * 20 % 255, 50, 90) if i % 2 else 120)
            name = f"{'N' if folder == 'no' else 'Y'}{i + 1}{ext}" if i % 3 else f"{i + 1} {folder}{ext}"
            img.save(raw / folder / name, format="JPEG" if ext.lower() in (".jpg", ".jpeg") else "PNG")
    return raw


def build_headct(raw: Path, nested: bool = True, n: int = 12) -> Path:
    img_dir = raw / "head_ct" / "head_ct" if nested else raw / "head_ct"
    img_dir.mkdir(parents=True)
    with open(raw / "labels.csv", "w", newline="") as f:
        f.write("id, hemorrhage\n")
        for i in range(n):
            f.write(f"{i},{1 if i % 2 else 0}\n")
    for i in range(n):
        mode = "RGBA" if i % 3 == 0 else "RGB"
        Image.new(mode, (30 + i, 40), (i, 2 * i, 3 * i, 255)[: len(mode)]).save(img_dir / f"{i:03d}.png")
    return raw


def build_elpv(raw: Path) -> Path:
    (raw / "images").mkdir(parents=True)
    rows = []
    for i in range(14):
        prob = [0.0, 0.0, 1.0, 0.3333, 0.0, 0.6667, 1.0][i % 7]
        typ = "mono" if i % 2 else "poly"
        name = f"images/cell{i + 1:04d}.png"
        _grey(30, 30, i).save(raw / name)
        rows.append(f"{name}  {prob}  {typ}")
    (raw / "labels.csv").write_text("\n".join(rows) + "\n")
    return raw


def _names(rows, split, defect=None):
    return sorted(
        Path(r.path).name for r in rows if r.split == split and (defect is None or r.defect_type == defect)
    )


# --------------------------------------------------------------------------------------------------


def test_split_is_sklearn_on_sorted_list():
    items = [f"f{i:02d}" for i in range(20)]
    shuffled = items[::-1]
    train, test = split_normals(shuffled, 42)
    ref_train, ref_test = train_test_split(items, test_size=0.25, random_state=42)
    assert train == list(ref_train) and test == list(ref_test)
    assert split_normals(items, 7) != (train, test)


def test_aitex_tiles_quirks_and_report(tmp_path):
    raw = build_aitex(tmp_path / "raw")
    root = prepare_aitex(raw, tmp_path / "data" / "aitex")
    rows = read_manifest(root)
    info = json.loads((root / "bgad_dataset.json").read_text())
    assert info["name"] == "aitex" and info["has_pixel_masks"] is True
    assert info["categories"] == {"aitex": {"kind": "texture"}}
    conv = info["conversion"]
    # 5 normal images (stray kept) -> 80 tiles -> 60/20
    assert conv["counts"]["train/good"] == 60 and conv["counts"]["test/good"] == 20
    normal = sorted(
        f"{fab}_{stem}_{k:02d}.png"
        for fab, stem in [
            ("2306881-210020u", "0001_000_00"),
            ("2306881-210020u", "0002_000_00"),
            ("2608691-202020u", "0001_000_01"),
            ("2608691-202020u", "0002_000_01"),
            ("2608691-202020u", "0018_00_01"),
        ]
        for k in range(16)
    )
    ref_train, ref_test = train_test_split(normal, test_size=0.25, random_state=42)
    assert _names(rows, "train") == sorted(ref_train)
    assert _names(rows, "test", "good") == sorted(ref_test)
    # defect tiles: broken_end tiles 0 and 5 (tile 4 only has ramp values < 128); fuzzyball tiles 2, 10 (mask1 | mask2)
    assert _names(rows, "test", "broken_end") == ["0001_002_00_00.png", "0001_002_00_05.png"]
    assert _names(rows, "test", "fuzzyball") == ["0044_019_04_02.png", "0044_019_04_10.png"]
    assert conv["dropped_empty_mask_tiles"] == {"broken_end": 14, "fuzzyball": 14}
    excluded = {e["file"]: e["reason"] for e in conv["excluded"]}
    assert set(excluded) == {
        "Defect_images/0100_025_08.png",
        "Defect_images/unused/0094_027_05.png",
        "Mask_images/0094_027_05_mask.png",
    }
    assert "no mask" in excluded["Defect_images/0100_025_08.png"]
    assert any("0018_00_01.png" in n for n in conv["notes"])
    assert any("union" in n and "0044_019_04" in n for n in conv["notes"])
    # tiles are 256x256 grey, masks binary 0/255 and non-empty
    tile = Image.open(root / "aitex/test/fuzzyball/0044_019_04_10.png")
    assert tile.size == (256, 256) and tile.mode == "L"
    m = np.asarray(Image.open(root / "aitex/ground_truth/fuzzyball/0044_019_04_10_mask.png"))
    assert set(np.unique(m)) == {0, 255} and (m == 255).sum() == 15 * 15
    src = np.asarray(Image.open(raw / "Defect_images/0044_019_04.png"))[:, 2560:2816]
    assert np.array_equal(np.asarray(Image.open(root / "aitex/test/fuzzyball/0044_019_04_10.png")), src)
    # readable by the MVTec reader, masks matched
    data = load_mvtec_category(root, "aitex", "aitex")
    assert data.kind == "texture" and data.has_pixel_masks
    assert all(s.mask_path is not None for s in data.test if s.is_anomalous)
    assert len(data.train) == 60 and len(data.test) == 24


def test_aitex_is_idempotent_and_refuses_other_seed(tmp_path):
    raw = build_aitex(tmp_path / "raw")
    root = prepare_aitex(raw, tmp_path / "aitex")
    mtime = (root / "manifest.csv").stat().st_mtime_ns
    assert prepare_aitex(raw, tmp_path / "aitex") == root
    assert (root / "manifest.csv").stat().st_mtime_ns == mtime
    with pytest.raises(DatasetError, match="seed"):
        prepare_aitex(raw, tmp_path / "aitex", seed=7)
    other = prepare_aitex(raw, tmp_path / "aitex_seed7", seed=7)
    assert _names(read_manifest(other), "train") != _names(read_manifest(root), "train")


def test_aitex_defect_without_mask_is_an_error_and_atomic(tmp_path):
    raw = build_aitex(tmp_path / "raw")
    (raw / "Mask_images" / "0001_002_00_mask.png").unlink()
    with pytest.raises(DatasetError, match="0001_002_00.png has no mask"):
        prepare_aitex(raw, tmp_path / "out" / "aitex")
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []


def test_aitex_mask_of_wrong_size(tmp_path):
    raw = build_aitex(tmp_path / "raw")
    _aa_mask(2048, 256, [(5, 5, 20, 20)]).save(raw / "Mask_images" / "0001_002_00_mask.png")
    with pytest.raises(DatasetError, match=r"0001_002_00_mask.png is 2048x256 but its image"):
        prepare_aitex(raw, tmp_path / "aitex")


def test_aitex_truncated_image_leaves_nothing(tmp_path):
    raw = build_aitex(tmp_path / "raw")
    p = raw / "NoDefect_images" / "2608691-202020u" / "0002_000_01.png"
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(DatasetError, match="0002_000_01.png"):
        prepare_aitex(raw, tmp_path / "out" / "aitex")
    assert list((tmp_path / "out").iterdir()) == [] if (tmp_path / "out").exists() else True


def test_aitex_unexpected_files(tmp_path):
    raw = build_aitex(tmp_path / "raw")
    (raw / "NoDefect_images" / "2306881-210020u" / "notes.txt").write_text("x")
    with pytest.raises(DatasetError, match="notes.txt"):
        prepare_aitex(raw, tmp_path / "aitex")
    (raw / "NoDefect_images" / "2306881-210020u" / "notes.txt").unlink()
    _grey(4096, 256).save(raw / "Defect_images" / "0200_099_01.png")
    with pytest.raises(DatasetError, match="defect code '099'"):
        prepare_aitex(raw, tmp_path / "aitex")


def test_missing_raw_folders(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        prepare_aitex(tmp_path / "nope", tmp_path / "aitex")
    (tmp_path / "raw" / "no").mkdir(parents=True)
    (tmp_path / "raw" / "yes").mkdir()
    with pytest.raises(DatasetError, match="holds no images"):
        prepare_brainmri(tmp_path / "raw", tmp_path / "brainmri")


def test_brainmri_all_extensions(tmp_path):
    raw = build_brainmri(tmp_path / "raw", n_no=8, n_yes=5)
    root = prepare_brainmri(raw, tmp_path / "brainmri")
    rows = read_manifest(root)
    info = json.loads((root / "bgad_dataset.json").read_text())
    assert info["has_pixel_masks"] is False and info["categories"] == {"brainmri": {"kind": "object"}}
    assert info["conversion"]["counts"] == {"test/defect": 5, "test/good": 2, "train/good": 6}
    assert info["conversion"]["source_extensions"] == {".JPG": 3, ".jpeg": 3, ".jpg": 4, ".png": 3}
    no = sorted(p.name for p in (raw / "no").iterdir())
    ref_train, ref_test = train_test_split(no, test_size=0.25, random_state=42)
    assert _names(rows, "train") == sorted(ref_train) and _names(rows, "test", "good") == sorted(ref_test)
    assert (root / "brainmri/test/defect/1 yes.jpg").read_bytes() == (raw / "yes/1 yes.jpg").read_bytes()
    data = load_mvtec_category(root, "brainmri", "brainmri")
    assert not data.has_pixel_masks and len(data.test) == 7


def test_brainmri_unexpected_extension_and_truncated(tmp_path):
    raw = build_brainmri(tmp_path / "raw")
    (raw / "yes" / "Y99.gif").write_bytes(b"GIF89a")
    with pytest.raises(DatasetError, match=r"Y99.gif.*'\.gif'"):
        prepare_brainmri(raw, tmp_path / "brainmri")
    (raw / "yes" / "Y99.gif").unlink()
    p = raw / "yes" / "Y2.JPG"
    p.write_bytes(p.read_bytes()[:100])
    with pytest.raises(DatasetError, match="Y2.JPG"):
        prepare_brainmri(raw, tmp_path / "brainmri")
    assert not (tmp_path / "brainmri").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["raw"]  # no temporary folder left behind


@pytest.mark.parametrize("nested", [True, False])
def test_headct_both_shapes(tmp_path, nested):
    raw = build_headct(tmp_path / "raw", nested=nested, n=12)
    root = prepare_headct(raw, tmp_path / "headct")
    rows = read_manifest(root)
    normals = [f"{i:03d}.png" for i in range(12) if i % 2 == 0]
    ref_train, ref_test = train_test_split(normals, test_size=0.25, random_state=42)
    assert _names(rows, "train") == sorted(ref_train)
    assert _names(rows, "test", "good") == sorted(ref_test)
    assert _names(rows, "test", "defect") == [f"{i:03d}.png" for i in range(12) if i % 2]
    info = json.loads((root / "bgad_dataset.json").read_text())
    assert info["conversion"]["image_folder"] == ("head_ct/head_ct" if nested else "head_ct")


def test_headct_label_problems(tmp_path):
    raw = build_headct(tmp_path / "raw", n=6)
    Image.new("RGB", (10, 10)).save(raw / "head_ct" / "head_ct" / "006.png")
    with pytest.raises(DatasetError, match="without a label.*006.png"):
        prepare_headct(raw, tmp_path / "headct")
    (raw / "labels.csv").write_text("id,label\n0,0\n")
    with pytest.raises(DatasetError, match="id, hemorrhage"):
        prepare_headct(raw, tmp_path / "headct")


def test_elpv(tmp_path):
    raw = build_elpv(tmp_path / "raw")
    root = prepare_elpv(raw, tmp_path / "elpv")
    rows = read_manifest(root)
    conv = json.loads((root / "bgad_dataset.json").read_text())["conversion"]
    # probs cycle [0, 0, 1, .33, 0, .67, 1] over 14 images: 6 normal, 4 defective, 4 uncertain
    assert conv["uncertain_left_out_total"] == 4
    assert conv["counts"]["train/good"] + conv["counts"]["test/good"] == 6
    assert conv["counts"]["test/good"] == 2
    assert sorted(_names(rows, "test", "mono") + _names(rows, "test", "poly")) == sorted(
        f"cell{i + 1:04d}.png" for i in range(14) if i % 7 in (2, 6)
    )
    assert {r.defect_type for r in rows if r.label == 1} == {"mono", "poly"}


def test_elpv_missing_image(tmp_path):
    raw = build_elpv(tmp_path / "raw")
    (raw / "images" / "cell0003.png").unlink()
    with pytest.raises(DatasetError, match="cell0003.png is listed but missing"):
        prepare_elpv(raw, tmp_path / "elpv")


def test_existing_foreign_folder_is_not_overwritten(tmp_path):
    raw = build_brainmri(tmp_path / "raw")
    (tmp_path / "brainmri").mkdir()
    (tmp_path / "brainmri" / "something.txt").write_text("mine")
    with pytest.raises(DatasetError, match="never overwritten"):
        prepare_brainmri(raw, tmp_path / "brainmri")
    assert (tmp_path / "brainmri" / "something.txt").read_text() == "mine"


def test_manifest_columns(tmp_path):
    raw = build_brainmri(tmp_path / "raw")
    root = prepare_brainmri(raw, tmp_path / "brainmri")
    with open(root / "manifest.csv", newline="") as f:
        r = list(csv.DictReader(f))
    assert list(r[0]) == ["path", "split", "label", "defect_type", "mask", "sha256"]
    assert all(len(row["sha256"]) == 64 for row in r)
