"""Tests for bgad.scoring.anomaly_maps (docs/method.md §4): one global max per level over the whole test
set, float64, align_corners bilinear upsampling, A = max(S) − S, image score = max of the map."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bgad.scoring import Scores, anomaly_maps


def _reference(level_ll: list[np.ndarray], size: tuple[int, int]) -> np.ndarray:
    total = 0.0
    for ll in level_ll:
        ll = np.asarray(ll, dtype=np.float64)
        prob = torch.from_numpy(np.exp(ll - ll.max()))
        total = (
            total + F.interpolate(prob[:, None], size=size, mode="bilinear", align_corners=True)[:, 0].numpy()
        )
    return total.max() - total


def test_matches_reference_on_random_levels() -> None:
    rng = np.random.default_rng(0)
    levels = [rng.normal(-3, 2, (5, 16, 16)), rng.normal(-3, 2, (5, 8, 8)), rng.normal(-3, 2, (5, 4, 4))]
    scores = anomaly_maps(levels, (32, 32))
    assert isinstance(scores, Scores)
    assert scores.maps.shape == (5, 32, 32)
    assert scores.maps.dtype == np.float64
    assert scores.image_scores.dtype == np.float64
    np.testing.assert_allclose(scores.maps, _reference(levels, (32, 32)), rtol=0, atol=1e-12)
    np.testing.assert_array_equal(scores.image_scores, scores.maps.reshape(5, -1).max(axis=1))
    assert scores.maps.min() == 0.0  # A = max(S) - S with a global max: its minimum is exactly 0


def test_bilinear_align_corners_by_hand() -> None:
    """A 2×2 map upsampled to 3×3 with align_corners=True keeps the corners and averages in between."""
    ll = np.log(np.array([[[1.0, 0.5], [0.25, 0.125]]]))  # P = exp(ll - max) = the values themselves
    scores = anomaly_maps([ll], (3, 3))
    s = np.array(
        [
            [1.0, 0.75, 0.5],
            [0.625, (1.0 + 0.5 + 0.25 + 0.125) / 4, 0.3125],
            [0.25, 0.1875, 0.125],
        ]
    )
    np.testing.assert_allclose(scores.maps[0], 1.0 - s, rtol=0, atol=1e-15)
    assert scores.image_scores[0] == pytest.approx(0.875)


def test_levels_are_summed() -> None:
    a = np.zeros((1, 2, 2))
    b = np.log(np.array([[[1.0, 0.5], [0.5, 0.25]]]))
    scores = anomaly_maps([a, b], (2, 2))
    s = 1.0 + np.exp(b[0])
    np.testing.assert_allclose(scores.maps[0], s.max() - s, atol=1e-15)


def test_global_max_across_images_not_per_batch() -> None:
    """Two 'batches': a per-batch max would rank the images the other way round.

    Image 0 (batch 1) has max ℓ 0 and min ℓ -1; image 1 (batch 2) has max ℓ -3 and min ℓ -3.5.
    Global: image 1 is less likely (min -3.5 < -1) -> more anomalous. Per batch: image 0 scores
    1 - e^-1 = 0.63, image 1 scores 1 - e^-0.5 = 0.39 -> image 0 more anomalous.
    """
    img0 = np.zeros((4, 4))
    img0[1, 2] = -1.0
    img1 = np.full((4, 4), -3.0)
    img1[2, 1] = -3.5
    level = np.stack([img0, img1])

    full = anomaly_maps([level], (4, 4))
    per_batch = [anomaly_maps([level[i : i + 1]], (4, 4)).image_scores[0] for i in range(2)]
    assert per_batch[0] > per_batch[1]  # the wrong ranking
    assert full.image_scores[1] > full.image_scores[0]  # the right one
    assert full.image_scores[0] == pytest.approx(1 - np.exp(-1.0), abs=1e-14)
    assert full.image_scores[1] == pytest.approx(1 - np.exp(-3.5), abs=1e-14)


def test_global_max_of_the_map_is_over_all_images() -> None:
    """A = max(S) − S uses the max of S over the whole set, not per image."""
    level = np.stack([np.zeros((2, 2)), np.full((2, 2), -1.0)])
    scores = anomaly_maps([level], (2, 2))
    np.testing.assert_allclose(scores.maps[0], 0.0)
    np.testing.assert_allclose(scores.maps[1], 1 - np.exp(-1.0), atol=1e-15)


def test_float64_separates_what_float32_would_tie() -> None:
    """1 − e^-30 and 1 − e^-32 are equal in float32 but distinct in float64; inputs in float32."""
    level = np.zeros((3, 2, 2), dtype=np.float32)
    level[0, 0, 0] = -30.0
    level[1, 1, 1] = -32.0
    scores = anomaly_maps([level], (2, 2))
    assert scores.image_scores[1] > scores.image_scores[0] > scores.image_scores[2] == 0.0
    assert scores.top_ties == 1
    # the same computation in float32 ties (so the test really needs float64)
    s32 = np.exp(level - level.max()).astype(np.float32)
    a32 = s32.max() - s32
    assert a32[0].max() == a32[1].max()


def test_large_negative_ll_does_not_underflow_in_float64() -> None:
    level = np.zeros((2, 2, 2))
    level[1] = -700.0  # exp(-700) ~ 1e-304 is representable in float64
    scores = anomaly_maps([level], (2, 2))
    assert np.isfinite(scores.maps).all()
    assert scores.image_scores[1] == pytest.approx(1.0)


def test_top_ties_counted() -> None:
    level = np.zeros((4, 3, 3))
    level[0, 1, 1] = -2.0
    level[2, 0, 0] = -2.0
    level[3, 2, 2] = -1.0
    scores = anomaly_maps([level], (3, 3))
    assert scores.top_ties == 2
    np.testing.assert_allclose(scores.image_scores, [1 - np.exp(-2), 0.0, 1 - np.exp(-2), 1 - np.exp(-1)])
    assert anomaly_maps([np.zeros((3, 2, 2))], (2, 2)).top_ties == 3


def test_upsampling_to_larger_size_matches_torch() -> None:
    rng = np.random.default_rng(1)
    ll = rng.normal(0, 1, (2, 5, 7))
    scores = anomaly_maps([ll], (13, 9))
    prob = torch.from_numpy(np.exp(ll - ll.max()))
    up = F.interpolate(prob[:, None], size=(13, 9), mode="bilinear", align_corners=True)[:, 0].numpy()
    np.testing.assert_allclose(scores.maps, up.max() - up, rtol=0, atol=1e-14)
