"""Checks every registered method passes, with tiny parameters on tiny data (scikit-learn style).

Fit on random features, score: right shapes, dtypes, finite values, deterministic for the same seed.
Plus an end-to-end cell of each reference baseline through ``run_cell`` on the synthetic dataset.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from bgad.bench.cell import run_cell
from bgad.bench.config import RunConfig
from bgad.bench.method_registry import METHODS
from bgad.flow_detector import TrainingData

SIZE = 32
SHAPES = [(4, 8, 8), (6, 4, 4), (8, 2, 2)]
TINY = {
    "meta_epochs": 1,
    "sub_epochs": 1,
    "phase1_epochs": 1,
    "warmup_epochs": 1,
    "n_blocks": 1,
    "batch_size": 4,
    "fiber_size": 64,
    "cond_dim": 8,
    "repeats": 1,
    "racp": False,
    "input_size": SIZE,
}
METHOD_NAMES = METHODS.names()


def _data(seed: int) -> tuple[TrainingData, list[torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    feats = lambda n: [torch.randn(n, c, h, w, generator=gen) for c, h, w in SHAPES]  # noqa: E731
    normal, anomalies, test = feats(6), feats(1), feats(3)
    masks = np.zeros((1, SIZE, SIZE), np.uint8)
    masks[:, :8, :8] = 1
    data = TrainingData(
        normal_features=normal,
        normal_images=np.zeros((6, SIZE, SIZE, 3), np.uint8),
        anomaly_features=anomalies,
        anomaly_images=np.zeros((1, SIZE, SIZE, 3), np.uint8),
        anomaly_masks=masks,
        kind="texture",
        compute_features=lambda images: [torch.zeros(len(images), c, h, w) for c, h, w in SHAPES],
    )
    return data, test


def _fit_score(name: str, seed: int = 0):
    spec = METHODS.get(name)
    cfg = RunConfig.of(method=name, seed=seed).with_overrides({**spec.defaults, **TINY})
    detector = spec.build(cfg, "cpu")
    evaluated: list[int] = []
    data, test = _data(seed)
    assert detector.fit(data, after_meta_epoch=evaluated.append, on_sub_epoch=lambda m, s: None) is detector
    return detector, detector.score(test, (SIZE, SIZE)), evaluated


@pytest.mark.parametrize("name", METHOD_NAMES)
def test_method_fits_and_scores_tiny_data(name: str) -> None:
    detector, scores, evaluated = _fit_score(name)
    assert evaluated, "fit must call after_meta_epoch at least once so the runner evaluates"
    assert scores.maps.shape == (3, SIZE, SIZE) and scores.maps.dtype == np.float64
    assert scores.image_scores.shape == (3,) and scores.image_scores.dtype == np.float64
    assert np.isfinite(scores.maps).all() and np.isfinite(scores.image_scores).all()
    assert 1 <= scores.top_ties <= 3
    assert isinstance(detector.timings_, dict) and isinstance(detector.counters_, dict)
    assert all(isinstance(v, float) for v in detector.timings_.values())
    assert all(isinstance(v, int) for v in detector.counters_.values())


@pytest.mark.parametrize("name", METHOD_NAMES)
def test_method_is_deterministic_for_a_seed(name: str) -> None:
    _, first, _ = _fit_score(name, seed=1)
    _, second, _ = _fit_score(name, seed=1)
    np.testing.assert_array_equal(first.maps, second.maps)
    np.testing.assert_array_equal(first.image_scores, second.image_scores)


@pytest.mark.parametrize("name", METHOD_NAMES)
def test_method_leaves_the_global_rng_alone_and_does_not_read_it(name: str) -> None:
    """Every random choice comes from the seed: the global torch stream is neither read nor moved."""
    torch.manual_seed(123)
    before = torch.get_rng_state()
    _, first, _ = _fit_score(name, seed=2)
    assert torch.equal(torch.get_rng_state(), before)
    torch.manual_seed(456)
    _, second, _ = _fit_score(name, seed=2)
    np.testing.assert_array_equal(first.maps, second.maps)


@pytest.mark.parametrize("name", ["patchcore", "padim"])
def test_reference_baseline_end_to_end_cell(name: str, tmp_path: Path) -> None:
    from bgad.bench.config import resolve_config

    settings = {"method": name, "category": "widget", "input_size": 64, "n_known_anomalies": 2}
    cfg = resolve_config("quick", layers=[("test", settings)])
    folder = run_cell(cfg, tmp_path)
    rec = json.loads((folder / "result.json").read_text())
    assert rec["status"] == "complete" and rec["method"]["name"] == name
    last = rec["metrics"]["last_epoch"]
    assert {"image_auroc", "pixel_auroc", "pro"} <= set(last)
    assert 0.0 <= last["image_auroc"] <= 1.0 and 0.0 <= last["pixel_auroc"] <= 1.0
    assert len(rec["metrics"]["per_epoch"]) == 1
    assert rec["known_anomalies"]["used_in_training"] is False
    assert rec["counters"]
