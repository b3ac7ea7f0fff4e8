"""The speed benchmark (``python -m benchmarks.speed``) runs end to end in its smoke mode: every side
of items 1–4 in its own process, the report and the JSON written, the same math on both sides. Tiny
sizes; no timing is asserted (targets are the benchmark's business, not the tests')."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import speed, speed_common

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.data
def test_speed_benchmark_smoke_run(shared_data: Path, tmp_path: Path) -> None:
    raw = shared_data / "aitex_raw"
    if not raw.is_dir():
        pytest.skip(f"real AITEX copy not found at {raw}")
    report, raw_json = tmp_path / "performance.md", tmp_path / "performance.json"
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.speed", "--smoke", "--only", "1,2,3,4"]
        + ["--report", str(report), "--json", str(raw_json)],
        cwd=REPO,
        env=os.environ | {"BGAD_AITEX_RAW": str(raw)},
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    text = report.read_text()
    for heading in (
        "### 1. A whole cell end to end (cpu)",
        "### 2. The flow step (cpu)",
        "### 3. Evaluation",
    ):
        assert heading in text
    assert "<!-- speed:start -->" in text and "<!-- speed:end -->" in text
    speed = json.loads(raw_json.read_text())["speed"]

    item1 = speed["item1"][0]
    assert set(item1["sides"]) == {"ours", "ours_default_malloc", "released", "released_tuned_malloc"}
    if platform.libc_ver()[0] == "glibc":  # each side ran with the allocator it names
        assert item1["sides"]["ours"]["malloc"]["tuned"] is True
        assert item1["sides"]["released"]["malloc"]["tuned"] is False
    assert item1["max_abs_auroc_diff"] < 1e-4  # same math, float rounding only
    assert item1["max_abs_pro_paper_diff"] < 1e-3  # BGAD's loop: the same definition as pro_paper

    rows = speed["item2"][0]["rows"]
    assert len(rows) == 12 and all(r["fibers_per_s"] > 0 for r in rows)

    item3 = speed["item3"][0]
    assert item3["identical_same_features"] is True  # batched = one image at a time, bit for bit
    assert item3["rows"][1]["max_rel_map_diff"] < 1e-4

    item4 = speed["item4"]
    assert item4["pro_auc"]["abs_diff_vs_reference"] <= 1e-6
    assert item4["loop_seconds"] > 0 and item4["loop_value"] is not None  # all 1000 thresholds ran
    assert item4["pro_auc_paper"]["abs_diff_vs_loop"] <= 1e-6


def _pro_result(ratio_exact: float, ratio_paper: float) -> dict:
    return {
        "smoke": False,
        "command": "python -m benchmarks.speed --only 4",
        "machine": {
            "date": "today",
            "cpu": "cpu",
            "cores": 2,
            "torch_threads": 1,
            "gpu": "no GPU on this machine",
            "python": "3",
            "versions": {},
        },
        "item4": {
            "setup": "maps",
            "note": "Released loop over all 1000 thresholds",
            "loop_seconds": 10.0,
            "loop_extrapolated": False,
            "loop_value": 0.5,
            "pro_auc": {
                "value": 0.6,
                "seconds": 10 / ratio_exact,
                "ratio": ratio_exact,
                "abs_diff_vs_reference": 0.0,
            },
            "pro_auc_paper": {
                "value": 0.5,
                "seconds": 10 / ratio_paper,
                "ratio": ratio_paper,
                "abs_diff_vs_loop": 0.0,
            },
        },
    }


def test_report_thresholds_come_from_targets(monkeypatch: pytest.MonkeyPatch) -> None:
    labels = {name: target.label for name, target in speed_common.TARGETS.items()}
    assert labels == {
        "cell": "≥ 5×",
        "eval": "≥ 3×",
        "pro": "≥ 20×",
        "pro_value": "≤ 1e-06",
        "fp16_auroc": "≤ 0.001",
    }
    text = speed.markdown(_pro_result(10.0, 100.0))
    assert "| 4. pro_auc vs per-threshold loop | ≥ 20× | 10× | FAIL |" in text
    assert "| 4. pro_auc_paper vs per-threshold loop | ≥ 20× | 100× | PASS |" in text
    assert "### 4. PRO" in text and "No GPU on this machine" in text
    monkeypatch.setitem(speed_common.TARGETS, "pro", speed_common.Target(5.0, at_least=True, unit="×"))
    text = speed.markdown(_pro_result(10.0, 100.0))
    assert "| 4. pro_auc vs per-threshold loop | ≥ 5× | 10× | PASS |" in text
