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
    "epochs": 1,
    "steps_per_epoch": 1,
    "random_weights": True,
}
METHOD_NAMES = METHODS.names()


def _data(seed: int, inputs: str = "features") -> tuple[TrainingData, list[torch.Tensor]]:
    """Random features of ``SHAPES`` per level, or for a method that reads images one level of images."""
    gen = torch.Generator().manual_seed(seed)
    shapes = SHAPES if inputs == "features" else [(3, SIZE, SIZE)]
    feats = lambda n: [torch.rand(n, c, h, w, generator=gen) for c, h, w in shapes]  # noqa: E731
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
    data, test = _data(seed, spec.inputs)
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


@pytest.mark.parametrize("name", [n for n in METHOD_NAMES if METHODS.get(n).supervised])
def test_supervised_competitor_end_to_end_cell_learns_from_the_cells_known_anomalies(
    name: str, tmp_path: Path
) -> None:
    """A DevNet / DRA cell trains on exactly the known anomalies BGAD's cell gets (same files), is
    evaluated after every epoch, and its saved model scores the test images as the cell did."""
    import pandas as pd

    from bgad.bench.cell import known_and_test
    from bgad.bench.config import resolve_config
    from bgad.bench.saved_model import TrainedModel
    from bgad.data.datasets import load_category

    settings = {"category": "widget", "input_size": 64, "n_known_anomalies": 3, "seed": 5}
    short = {"save_model": True, "epochs": 2, "steps_per_epoch": 2, "batch_size": 4}
    cfg = resolve_config("quick", short, layers=[("test", {**settings, "method": name})])
    folder = run_cell(cfg, tmp_path)
    rec = json.loads((folder / "result.json").read_text())
    data = load_category("synthetic", "widget")
    bgad_cfg = resolve_config("quick", layers=[("test", {**settings, "method": "bgad"})])
    bgad_known, bgad_test = known_and_test(bgad_cfg, data)
    assert rec["known_anomalies"]["files"] == [str(s.image_path.relative_to(data.root)) for s in bgad_known]
    assert rec["known_anomalies"]["used_in_training"] is True
    assert rec["dataset"]["counts"]["test_reduced"] == len(bgad_test)
    assert [e["meta_epoch"] for e in rec["metrics"]["per_epoch"]] == list(range(cfg.epochs))
    assert rec["counters"]["optimizer_steps"] == cfg.epochs * cfg.steps_per_epoch
    scored = pd.read_csv(folder / "scores.csv")
    trained = TrainedModel.load(folder)
    again = trained.predict([data.root / p for p in scored["path"]])
    np.testing.assert_allclose(again.image_scores, scored["score"], rtol=1e-5, atol=1e-6)
