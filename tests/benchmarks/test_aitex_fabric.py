"""The AITEX by-fabric AUROCs against hand-computed cases: a score that only knows the fabric, and one
that ranks well within each fabric but is shifted by fabric."""

from __future__ import annotations

import pandas as pd
import pytest

from benchmarks.aitex_fabric import fabric_of, fabric_scores


def tiles(rows: list[tuple[str, int, float]]) -> pd.DataFrame:
    """(fabric, label, score) → the columns of a cell's scores.csv, with AITEX-style tile names."""
    return pd.DataFrame(
        {
            "path": [
                f"aitex/test/x/{i:04d}_000_{fabric}_{i % 16:02d}.png" for i, (fabric, _, _) in enumerate(rows)
            ],
            "label": [label for _, label, _ in rows],
            "score": [score for _, _, score in rows],
        }
    )


def test_the_fabric_is_the_second_to_last_field_of_normal_and_defect_tile_names() -> None:
    assert fabric_of("aitex/test/good/2306881-210020u_0001_000_05_08.png") == "05"
    assert fabric_of("aitex/test/broken_end/0003_002_00_15.png") == "00"


def test_a_score_shifted_by_fabric_is_below_chance_pooled_yet_perfect_within_each_fabric() -> None:
    # Fabric A: 1 normal, 3 anomalies, all scored low; fabric B: 3 normals, 1 anomaly, all scored high.
    rows = [("0A", 0, 0.0)] + [("0A", 1, 1.0)] * 3 + [("0B", 0, 10.0)] * 3 + [("0B", 1, 11.0)]
    out = fabric_scores(tiles(rows))
    # Pooled, 4 anomalies × 4 normals = 16 pairs: A's anomalies beat A's normal (3) and lose to B's
    # normals; B's anomaly beats all 4 normals (4) → 7/16.
    assert out["pooled"] == pytest.approx(7 / 16)
    assert out["within_fabric"] == pytest.approx(1.0)
    # Fabric-only score: A's anomaly rate 3/4 > B's 1/4 → every A tile above every B tile:
    # anomalies of A beat B's normals (3×3 = 9), tie A's normal (3 × 0.5); B's anomaly ties B's normals
    # (3 × 0.5) and loses to A's normal → (9 + 1.5 + 1.5) / 16.
    assert out["fabric_only"] == pytest.approx(12 / 16)
    normal_std = pd.Series([0.0, 10.0, 10.0, 10.0]).std()
    assert out["fabric_spread"] == pytest.approx(10.0 / normal_std)


def test_a_score_that_ignores_the_fabric_has_no_spread() -> None:
    rows = [("0A", 0, 0.0), ("0A", 0, 1.0), ("0A", 1, 2.0), ("0B", 0, 0.0), ("0B", 0, 1.0), ("0B", 1, 2.0)]
    out = fabric_scores(tiles(rows))
    assert out["fabric_spread"] == pytest.approx(0.0)
    assert out["pooled"] == pytest.approx(1.0) and out["within_fabric"] == pytest.approx(1.0)
