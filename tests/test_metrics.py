"""Tests for bgad.metrics against slow, obviously-correct reference implementations.

The references below loop over thresholds and relabel connected components at every threshold, as
the released code does; the fast functions must give the same numbers (to 1e-6) on random blob masks
with defect-free images and tied scores.
"""

from __future__ import annotations

import bisect

import numpy as np
import pytest
from scipy import ndimage
from sklearn.metrics import auc, roc_auc_score

from bgad import metrics
from bgad.metrics import (
    METRIC_VARIANTS,
    compute_metrics,
    image_auroc,
    pixel_auroc,
    pro_auc,
    pro_auc_paper,
)

EIGHT = np.ones((3, 3), dtype=int)

# --------------------------------------------------------------------------------------------------
# slow references


def _regions(masks: np.ndarray) -> list[tuple[int, np.ndarray]]:
    out = []
    for i, m in enumerate(masks.astype(bool)):
        lab, k = ndimage.label(m, structure=EIGHT)
        out.extend((i, lab == r) for r in range(1, k + 1))
    return out


def ref_trapezoid(x: np.ndarray, y: np.ndarray, x_max: float) -> float:
    """MVTec AD evaluation code's `trapezoid` (finite inputs)."""
    correction = 0.0
    if x_max not in x:
        ins = bisect.bisect(x, x_max)
        assert 0 < ins < len(x)
        y_interp = y[ins - 1] + ((y[ins] - y[ins - 1]) * (x_max - x[ins - 1]) / (x[ins] - x[ins - 1]))
        correction = 0.5 * (y_interp + y[ins - 1]) * (x_max - x[ins - 1])
    mask = x <= x_max
    x, y = x[mask], y[mask]
    return float(np.sum(0.5 * (y[1:] + y[:-1]) * (x[1:] - x[:-1])) + correction)


def ref_pro_exact(masks: np.ndarray, maps: np.ndarray, fpr_limit: float = 0.3) -> float:
    """One threshold per distinct score (score >= t), PRO and FPR computed directly."""
    gt = masks.astype(bool)
    regions = _regions(gt)
    neg = ~gt
    fprs, pros = [0.0], [0.0]
    for t in np.unique(maps)[::-1]:
        above = maps >= t
        pros.append(float(np.mean([above[i][r].mean() for i, r in regions])))
        fprs.append((above & neg).sum() / neg.sum())
    fprs.append(1.0)
    pros.append(1.0)
    return ref_trapezoid(np.array(fprs), np.array(pros), fpr_limit) / fpr_limit


def ref_pro_paper(
    masks: np.ndarray, scores: np.ndarray, max_step: int = 1000, expect_fpr: float = 0.3
) -> float:
    """The released code's calculate_pro_metric, relabelling per threshold per image; scipy stands in
    for skimage's label (connectivity 2) and regionprops (bbox, image_filled with the 3×3 structure)."""
    gt = masks.astype(bool)
    binary = np.zeros_like(scores, dtype=bool)
    max_th, min_th = scores.max(), scores.min()
    delta = (max_th - min_th) / max_step
    pros, fprs = [], []
    for step in range(max_step):
        thred = max_th - step * delta
        binary[scores <= thred], binary[scores > thred] = 0, 1
        pro = []
        for pred, mask in zip(binary, gt, strict=True):
            lab, _ = ndimage.label(mask, structure=EIGHT)
            for r, box in enumerate(ndimage.find_objects(lab), start=1):
                region = lab[box] == r
                filled = ndimage.binary_fill_holes(region, structure=EIGHT)
                pro.append(np.logical_and(pred[box], filled).sum() / region.sum())
        pros.append(np.array(pro).mean())
        fprs.append(np.logical_and(~gt, binary).sum() / (~gt).sum())
    pros, fprs = np.array(pros), np.array(fprs)
    idx = fprs <= expect_fpr
    kept = fprs[idx]
    kept = (kept - kept.min()) / (kept.max() - kept.min())
    return float(auc(kept, pros[idx]))


# --------------------------------------------------------------------------------------------------
# random cases


def make_case(
    seed: int, n: int = 6, size: int = 16, kind: str = "float", holes: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Blob masks (some images defect-free), maps correlated with the masks.

    kind: "float" (continuous), "rounded" (many ties, also across normal/anomalous), "int" (integer
    scores 0..1000, so the paper variant's thresholds hit scores exactly and '>' vs '>=' matters).
    ``holes``: punch a hole into every blob and add a ring with an island inside it (nested regions),
    where the paper variant's hole-filled overlap differs from the plain one.
    """
    rng = np.random.default_rng(seed)
    masks = np.zeros((n, size, size), dtype=np.uint8)
    for i in range(n):
        if i % 3 == 0:
            continue  # defect-free image
        g = ndimage.gaussian_filter(rng.normal(size=(size, size)), 1.2)
        masks[i] = g > np.quantile(g, 0.85)
        if holes:
            masks[i] &= ~ndimage.binary_erosion(masks[i], iterations=2)  # hollow blobs
            masks[i, 1:8, 1:8] = 1  # a ring of width 1 around a one-pixel island
            masks[i, 2:7, 2:7] = 0
            masks[i, 4, 4] = 1
    maps = rng.random((n, size, size)) + rng.uniform(0.2, 0.8) * masks * rng.random((n, size, size))
    maps = ndimage.gaussian_filter(maps, (0, 0.7, 0.7))
    if kind == "rounded":
        maps = np.round(maps * 20) / 20
    elif kind == "int":
        maps = np.round((maps - maps.min()) / (maps.max() - maps.min()) * 1000)
    return masks, maps


CASES = [(0, "float"), (1, "rounded"), (2, "int"), (3, "float"), (4, "rounded"), (5, "int")]


def test_hole_cases_have_holes() -> None:
    """The hole cases exercise what they are meant to: regions with holes and a nested region."""
    masks, _ = make_case(21, holes=True)
    m = masks[1].astype(bool)
    assert (ndimage.binary_fill_holes(m, structure=EIGHT) & ~m).sum() >= 9
    assert ndimage.label(m[1:8, 1:8], structure=EIGHT)[1] == 2  # the ring and its island


@pytest.mark.parametrize(("seed", "kind"), CASES)
@pytest.mark.parametrize("fpr_limit", [0.3, 0.05, 1.0])
def test_pro_auc_matches_reference(seed: int, kind: str, fpr_limit: float) -> None:
    masks, maps = make_case(seed, kind=kind)
    assert pro_auc(masks, maps, fpr_limit=fpr_limit) == pytest.approx(
        ref_pro_exact(masks, maps, fpr_limit), abs=1e-6
    )


@pytest.mark.parametrize(("seed", "kind"), CASES)
@pytest.mark.parametrize("holes", [False, True])
def test_pro_auc_paper_matches_reference(seed: int, kind: str, holes: bool) -> None:
    masks, maps = make_case(seed, kind=kind, holes=holes)
    assert pro_auc_paper(masks, maps) == pytest.approx(ref_pro_paper(masks, maps), abs=1e-6)


def test_pro_auc_paper_counts_predicted_holes() -> None:
    """A ring whose hole alone scores high: no region pixel is hit, but the filled overlap is."""
    masks = np.zeros((2, 9, 9), dtype=np.uint8)
    masks[0, 2:7, 2:7] = 1
    masks[0, 3:6, 3:6] = 0
    maps = np.random.default_rng(0).random((2, 9, 9)) * 0.1
    maps[0, 3:6, 3:6] = 1.0
    assert pro_auc_paper(masks, maps) > 0.5
    assert pro_auc_paper(masks, maps) == pytest.approx(ref_pro_paper(masks, maps), abs=1e-9)
    assert pro_auc(masks, maps) < 0.1  # the exact AU-PRO does not count the hole


@pytest.mark.parametrize(("num_thresholds", "fpr_limit"), [(37, 0.3), (250, 0.5)])
def test_pro_auc_paper_other_settings(num_thresholds: int, fpr_limit: float) -> None:
    masks, maps = make_case(7, n=5, kind="float", holes=True)
    assert pro_auc_paper(masks, maps, num_thresholds, fpr_limit) == pytest.approx(
        ref_pro_paper(masks, maps, num_thresholds, fpr_limit), abs=1e-6
    )


@pytest.mark.parametrize(("seed", "kind"), CASES)
def test_pixel_auroc_matches_sklearn(seed: int, kind: str) -> None:
    masks, maps = make_case(seed, kind=kind)
    assert pixel_auroc(masks, maps) == pytest.approx(roc_auc_score(masks.ravel(), maps.ravel()), abs=1e-12)


# --------------------------------------------------------------------------------------------------
# invariance and extremes


@pytest.mark.parametrize(
    "transform",
    [np.exp, lambda x: x**3 + 5 * x, lambda x: 10 * x - 3, lambda x: np.log1p(x)],
    ids=["exp", "cubic", "affine", "log1p"],
)
@pytest.mark.parametrize(("seed", "kind"), [(10, "float"), (11, "rounded")])
def test_pro_auc_invariant_to_monotone_transforms(transform, seed: int, kind: str) -> None:
    masks, maps = make_case(seed, kind=kind)
    assert pro_auc(masks, transform(maps)) == pytest.approx(pro_auc(masks, maps), abs=1e-12)


def test_pro_auc_invariant_to_ranks() -> None:
    masks, maps = make_case(12, kind="rounded")
    from scipy.stats import rankdata

    ranks = rankdata(maps, method="dense").reshape(maps.shape).astype(float)
    assert pro_auc(masks, ranks) == pytest.approx(pro_auc(masks, maps), abs=1e-12)


def test_pro_auc_paper_is_not_invariant() -> None:
    masks, maps = make_case(13, kind="float")
    # compressing the high scores leaves fewer of the uniform thresholds in the kept FPR range
    assert abs(pro_auc_paper(masks, -np.exp(-8 * maps)) - pro_auc_paper(masks, maps)) > 1e-3


def test_perfect_and_worst_detector() -> None:
    masks, _ = make_case(14, kind="float")
    rng = np.random.default_rng(0)
    noise = rng.random(masks.shape)
    perfect = noise + 2.0 * masks  # every anomalous pixel above every normal one
    worst = noise - 2.0 * masks
    assert pro_auc(masks, perfect) == pytest.approx(1.0, abs=1e-9)
    assert pro_auc(masks, worst) == pytest.approx(0.0, abs=1e-9)
    assert pixel_auroc(masks, perfect) == 1.0
    assert pixel_auroc(masks, worst) == 0.0
    assert pro_auc_paper(masks, perfect) == pytest.approx(1.0, abs=1e-9)


# --------------------------------------------------------------------------------------------------
# hand-computed golden cases


def test_image_auroc_golden() -> None:
    assert image_auroc(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8])) == pytest.approx(0.75)
    # a tie between a normal and an anomalous image counts 1/2: pairs (0.5,0.5)=.5, (0.5,.1)=1, (.2,.5)=0, (.2,.1)=1
    assert image_auroc(np.array([1, 0, 1, 0]), np.array([0.5, 0.5, 0.2, 0.1])) == pytest.approx(0.625)


def test_pixel_auroc_golden() -> None:
    masks = np.array([[[0, 1], [1, 0]]])
    assert pixel_auroc(masks, np.array([[[0.1, 0.8], [0.4, 0.35]]])) == 1.0
    # positives {0.5, 0.2}, negatives {0.5, 0.1}: 2.5 / 4
    assert pixel_auroc(masks, np.array([[[0.5, 0.5], [0.2, 0.1]]])) == pytest.approx(0.625)
    # pooled over images: image 2 is defect-free and its pixels are negatives
    masks2 = np.array([[[0, 1]], [[0, 0]]])
    maps2 = np.array([[[0.1, 0.6]], [[0.7, 0.2]]])  # pos {0.6} vs neg {0.1, 0.7, 0.2}: 2/3
    assert pixel_auroc(masks2, maps2) == pytest.approx(2 / 3)


def test_pro_auc_golden_interpolation_and_ties() -> None:
    # One region of 2 pixels (0.9, 0.7); 8 normal pixels. Curve (score >= t):
    # (0,0) -> (0,.5)@0.9 -> (1/8,.5)@0.8 -> (2/8,1)@0.7 (tie moves together) -> ...
    # Area to 0.2: 0.125*0.5 + 0.075*(0.5+0.8)/2 = 0.11125, / 0.2 = 0.55625
    masks = np.array([[[1, 1, 0, 0, 0], [0, 0, 0, 0, 0]]])
    maps = np.array([[[0.9, 0.7, 0.8, 0.7, 0.6], [0.5, 0.4, 0.2, 0.1, 0.0]]])
    assert pro_auc(masks, maps, fpr_limit=0.2) == pytest.approx(0.55625, abs=1e-12)


def test_pro_auc_uses_8_connectivity() -> None:
    # Pixels a=(0,0) and b=(1,1) touch diagonally: one region {a,b} plus region {c}.
    # a=0.9, b=c=0.1, normals 0.5. PRO at t=0.9 is (1/2 + 0)/2 = 0.25 (4-conn would give 1/3),
    # flat until FPR 1, so AU-PRO = 0.25.
    mask = np.zeros((4, 4), dtype=int)
    mask[0, 0] = mask[1, 1] = mask[3, 3] = 1
    amap = np.full((4, 4), 0.5)
    amap[0, 0], amap[1, 1], amap[3, 3] = 0.9, 0.1, 0.1
    assert pro_auc(mask[None], amap[None]) == pytest.approx(0.25, abs=1e-12)


def test_components_labelled_once(monkeypatch) -> None:
    masks, maps = make_case(15, n=6, kind="float")
    calls = []
    real = ndimage.label

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(metrics.ndimage, "label", counting)
    compute_metrics(np.array([int(m.any()) for m in masks]), maps.max(axis=(1, 2)), masks, maps)
    assert len(calls) <= len(masks)


def test_mask_dtypes_and_float32_maps_agree() -> None:
    masks, maps = make_case(16, kind="float")
    ref = pro_auc(masks, maps)
    assert pro_auc(masks.astype(bool), maps) == ref
    assert pro_auc(masks.astype(np.float32), maps) == ref
    m32 = maps.astype(np.float32)
    assert pro_auc(masks, m32) == pytest.approx(ref_pro_exact(masks, m32.astype(np.float64)), abs=1e-6)


# --------------------------------------------------------------------------------------------------
# compute_metrics


def test_compute_metrics_full_and_partial() -> None:
    masks, maps = make_case(17, kind="rounded")
    labels = np.array([int(m.any()) for m in masks])
    scores = maps.max(axis=(1, 2))
    out = compute_metrics(labels, scores, masks, maps)
    assert set(out) == {"image_auroc", "pixel_auroc", "pro", "pro_paper"}
    assert set(out) <= set(METRIC_VARIANTS)
    assert out["image_auroc"] == image_auroc(labels, scores)
    assert out["pixel_auroc"] == pixel_auroc(masks, maps)
    assert out["pro"] == pro_auc(masks, maps)
    assert out["pro_paper"] == pro_auc_paper(masks, maps)

    assert set(compute_metrics(labels, scores)) == {"image_auroc"}
    empty = np.zeros_like(masks)
    assert set(compute_metrics(labels, scores, empty, maps)) == {"image_auroc"}


def test_metric_variants_are_versioned() -> None:
    assert set(METRIC_VARIANTS) == {"image_auroc", "pixel_auroc", "pro", "pro_paper"}
    assert all(v.rstrip().split()[-1].startswith("v") for v in METRIC_VARIANTS.values())


# --------------------------------------------------------------------------------------------------
# errors


@pytest.mark.parametrize("fn", [pixel_auroc, pro_auc, pro_auc_paper])
def test_pixel_metric_errors(fn) -> None:
    masks, maps = make_case(18, n=3, size=8)
    with pytest.raises(ValueError, match="shape mismatch"):
        fn(masks, maps[:, :-1])
    with pytest.raises(ValueError, match=r"\(N, H, W\)"):
        fn(masks[0], maps[0])
    with pytest.raises(ValueError, match="masks must be binary"):
        fn(masks * 2, maps)
    bad = maps.copy()
    bad[1, 2, 3] = np.nan
    with pytest.raises(ValueError, match="maps contains NaN"):
        fn(masks, bad)
    bad[1, 2, 3] = np.inf
    with pytest.raises(ValueError, match="maps contains NaN or infinite"):
        fn(masks, bad)
    with pytest.raises(ValueError, match="no anomalous pixel"):
        fn(np.zeros_like(masks), maps)
    with pytest.raises(ValueError, match="no normal pixel"):
        fn(np.ones_like(masks), maps)


@pytest.mark.parametrize("fn", [pro_auc, pro_auc_paper])
def test_bad_fpr_limit(fn) -> None:
    masks, maps = make_case(19, n=3, size=8)
    for bad in (0.0, -0.1, 1.5):
        with pytest.raises(ValueError, match="fpr_limit"):
            fn(masks, maps, fpr_limit=bad)


def test_image_auroc_errors() -> None:
    with pytest.raises(ValueError, match="both normal"):
        image_auroc(np.array([1, 1]), np.array([0.1, 0.2]))
    with pytest.raises(ValueError, match="shape mismatch"):
        image_auroc(np.array([0, 1]), np.array([0.1, 0.2, 0.3]))
    with pytest.raises(ValueError, match="labels must be binary"):
        image_auroc(np.array([0, 2]), np.array([0.1, 0.2]))
    with pytest.raises(ValueError, match="scores contains NaN"):
        image_auroc(np.array([0, 1]), np.array([0.1, np.nan]))


def test_compute_metrics_errors() -> None:
    masks, maps = make_case(20, n=3, size=8)
    labels, scores = np.array([0, 1, 1]), maps.max(axis=(1, 2))
    with pytest.raises(ValueError, match="both masks and maps"):
        compute_metrics(labels, scores, masks=masks)
    with pytest.raises(ValueError, match="labels"):
        compute_metrics(labels[:2], scores[:2], masks, maps)


def test_pro_auc_paper_degenerate_cases_give_nan() -> None:
    masks = np.array([[[1, 0], [0, 0]]])
    with pytest.warns(RuntimeWarning, match="all map values are equal"):
        assert np.isnan(pro_auc_paper(masks, np.zeros((1, 2, 2))))
    # perfect detector with constant background: every kept FPR is 0 -> 0/0 in the released code
    with pytest.warns(RuntimeWarning, match="same FPR"):
        assert np.isnan(pro_auc_paper(masks, np.array([[[1.0, 0.0], [0.0, 0.0]]])))
    # the exact AU-PRO is fine there
    assert pro_auc(masks, np.array([[[1.0, 0.0], [0.0, 0.0]]])) == pytest.approx(1.0)


# --------------------------------------------------------------------------------------------------
# ties: a metric of scores equal up to rounding is undefined


def test_tie_rule_on_hand_made_scores() -> None:
    # spread within 1e-4 of the magnitude (max |score|, or 1 when that is 0): tied
    assert metrics.tied(np.array([2.99998, 2.99999, 3.0]))  # 2e-5 apart at 3: the widget case
    assert metrics.tied(np.zeros(5))  # all zero: magnitude 1, spread 0
    assert metrics.tied(np.array([1.0, 1.00009]))  # 9e-5 apart at 1
    assert metrics.tied(np.array([-1.0, -1.00009]))  # negative scores: |score| is the magnitude
    # spread above 1e-4 of the magnitude: a real ranking, however small the scores
    assert not metrics.tied(np.array([1.0, 1.00011]))  # 1.1e-4 apart at 1
    assert not metrics.tied(np.array([2.9995, 3.0]))  # 5e-4 apart at 3: 1.7e-4 relative
    assert not metrics.tied(np.array([1e-7, 2e-7]))  # tiny scores, spread half their size


def test_tied_scores_give_no_metric_only_a_flag() -> None:
    labels = np.array([0] * 12 + [1] * 13)
    rng = np.random.default_rng(0)
    scores = 3.0 - rng.uniform(0, 2e-5, size=25)  # 25 image scores within 2e-5 of each other
    assert image_auroc(labels, scores) != 0.5  # the old code printed such a number (0.380 on widget)
    masks, maps = make_case(21, n=25, size=8)
    masks[labels == 0] = 0
    out = compute_metrics(labels, scores, masks, maps)
    assert np.isnan(out["image_auroc"]) and out["pixel_auroc"] == pixel_auroc(masks, maps)
    assert metrics.tie_flags(scores, maps) == {"image_auroc": "tied"}
    flat = np.full_like(maps, 2.5) + rng.uniform(0, 1e-5, size=maps.shape)  # tied maps: every pixel metric
    out = compute_metrics(labels, flat.max(axis=(1, 2)), masks, flat)
    assert set(out) == {"image_auroc", "pixel_auroc", "pro", "pro_paper"}
    assert all(np.isnan(v) for v in out.values())
    assert metrics.tie_flags(flat.max(axis=(1, 2)), flat) == dict.fromkeys(out, "tied")
