"""verify_dataset: counts, readable images, masks present / binary / of the image's size, manifest."""

from __future__ import annotations

import numpy as np
from PIL import Image
from test_btad import build_btad
from test_convert import build_aitex, build_brainmri

from bgad.data.convert import prepare_aitex, prepare_brainmri
from bgad.data.verify import verify_dataset


def test_clean_converted_dataset(tmp_path):
    root = prepare_brainmri(build_brainmri(tmp_path / "raw"), tmp_path / "brainmri")
    assert verify_dataset("brainmri", root, check_counts=False) == []
    problems = verify_dataset("brainmri", root)  # synthetic: not the official 73/25/155
    assert len(problems) == 3 and all("official count" in p for p in problems)


def test_missing_root():
    (p,) = verify_dataset("headct", "/nonexistent/headct")
    assert "does not exist" in p and "bgad-bench data prepare headct" in p


def test_aitex_findings(tmp_path):
    root = prepare_aitex(build_aitex(tmp_path / "raw"), tmp_path / "aitex")
    assert verify_dataset("aitex", root, check_counts=False) == []
    gt = root / "aitex" / "ground_truth"
    # a mask of the wrong size
    Image.new("L", (128, 256), 255).save(gt / "broken_end" / "0001_002_00_00_mask.png")
    # a non-binary mask
    m = np.zeros((256, 256), np.uint8)
    m[:5, :5] = 255
    m[5:8, :5] = 100
    Image.fromarray(m).save(gt / "fuzzyball" / "0044_019_04_02_mask.png")
    # a truncated image
    t = root / "aitex" / "train" / "good"
    victim = sorted(t.iterdir())[0]
    victim.write_bytes(victim.read_bytes()[:200])
    problems = verify_dataset("aitex", root, check_counts=False)
    text = "\n".join(problems)
    assert "0001_002_00_00_mask.png has size 128x256" in text
    assert "0044_019_04_02_mask.png is not binary" in text
    assert f"cannot read image {victim}" in text
    assert "has changed since preparation" in text  # manifest sha256
    # counts against AITEX's official (measured) numbers
    assert any("official count is 1692" in p for p in verify_dataset("aitex", root))


def test_missing_mask_and_unexpected_file(tmp_path):
    root = prepare_aitex(build_aitex(tmp_path / "raw"), tmp_path / "aitex")
    (root / "aitex/ground_truth/broken_end/0001_002_00_05_mask.png").unlink()
    (root / "aitex/test/broken_end/notes.txt").write_text("x")
    text = "\n".join(verify_dataset("aitex", root, check_counts=False))
    assert "notes.txt" in text
    assert "0001_002_00_05_mask.png" in text


def test_btad_verify(tmp_path):
    root = build_btad(tmp_path / "btad")
    assert verify_dataset("btad", root, check_counts=False) == []
    problems = verify_dataset("btad", root)
    assert any("01: 4 train images, the official count is 400" in p for p in problems)
    Image.new("L", (10, 10), 255).save(root / "02/ground_truth/ko/0000.png")
    assert any("has size 10x10" in p for p in verify_dataset("btad", root, check_counts=False))


def test_unlisted_file(tmp_path):
    root = prepare_brainmri(build_brainmri(tmp_path / "raw"), tmp_path / "brainmri")
    Image.new("RGB", (8, 8)).save(root / "brainmri/train/good/extra.png")
    assert any("extra.png is not listed" in p for p in verify_dataset("brainmri", root, check_counts=False))
