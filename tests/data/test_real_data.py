"""Conversion of the real raw copies in ../shared/data (AITEX, BrainMRI). Slow; skipped when absent.

Measured on the real AITEX copy (seed 42, mask threshold 128): 2256 normal tiles (141 images incl. the
stray 0018_00_01) -> 1692 train / 564 test; 183 defect tiles (DRA: 1692 / 564 / 183) by type below;
1481 defect tiles dropped for an empty mask tile; 0100_025_08 (no mask) and unused/0094_027_05 excluded.
Takes ~12 s on one core.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bgad.data.convert import prepare_aitex, prepare_brainmri
from bgad.data.verify import verify_dataset

pytestmark = [pytest.mark.slow, pytest.mark.data]

AITEX_COUNTS = {
    "train/good": 1692,
    "test/good": 564,
    "test/broken_end": 10,
    "test/broken_pick": 63,
    "test/broken_yarn": 9,
    "test/contamination": 2,
    "test/crease": 6,
    "test/cut_selvage": 12,
    "test/fuzzyball": 40,
    "test/nep": 14,
    "test/warp_ball": 5,
    "test/weft_crack": 15,
    "test/weft_curling": 7,
}


def _need(shared_data: Path, name: str) -> Path:
    p = shared_data / name
    if not p.is_dir():
        pytest.skip(
            f"real raw copy {p} is absent (set BGAD_SHARED_DATA or provide ../shared/data next to the repo)"
        )
    return p


def test_real_aitex(tmp_path, shared_data):
    raw = _need(shared_data, "aitex_raw")
    root = prepare_aitex(raw, tmp_path / "aitex")
    conv = json.loads((root / "bgad_dataset.json").read_text())["conversion"]
    assert conv["counts"] == dict(sorted(AITEX_COUNTS.items()))
    assert sum(v for k, v in AITEX_COUNTS.items() if k.startswith("test/") and k != "test/good") == 183
    assert conv["dropped_empty_mask_tiles_total"] == 1481
    assert conv["source_images"] == {"normal": 141, "defect": 104}
    assert {e["file"] for e in conv["excluded"]} == {
        "Defect_images/0100_025_08.png",
        "Defect_images/unused/0094_027_05.png",
        "Mask_images/0094_027_05_mask.png",
    }
    assert verify_dataset("aitex", root) == []


def test_real_brainmri(tmp_path, shared_data):
    raw = _need(shared_data, "brainmri_raw")
    root = prepare_brainmri(raw, tmp_path / "brainmri")
    conv = json.loads((root / "bgad_dataset.json").read_text())["conversion"]
    assert conv["source_counts"] == {"no": 98, "yes": 155}
    assert conv["counts"] == {"test/defect": 155, "test/good": 25, "train/good": 73}
    assert conv["source_extensions"] == {".JPG": 74, ".jpeg": 6, ".jpg": 171, ".png": 2}
    assert verify_dataset("brainmri", root) == []
