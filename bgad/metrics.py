"""Evaluation metrics: image AUROC, pixel AUROC and two flavours of PRO (docs/metrics.md).

Why two PROs: the paper cites the MVTec AU-PRO (per-region overlap against the false-positive rate,
integrated up to FPR 0.3 and divided by 0.3), but the authors' released code (``calculate_pro_metric``
in BGAD's ``utils``) computes something else: 1000 thresholds spaced uniformly in *score*, strict
``>``, each region's overlap read on the region with its holes filled, the kept FPRs (<= 0.3)
min-max rescaled to [0, 1]. The two numbers are not comparable, and only the exact one is invariant
to monotone changes of the scores. Both are implemented here, and every result records which one it
reports (:data:`METRIC_VARIANTS`; ``bgad-bench regress`` fails on a record of another definition).

Why this is fast: the released code relabels connected components for every threshold and every
image (minutes per evaluation). Here components are labelled once; both PROs and the pixel AUROC are
read off one sorted array of ground-truth-negative scores plus the (few) ground-truth-positive
scores sorted with their region weights -- cumulative sums and ``np.searchsorted``, no loop over
thresholds. Memory stays at roughly one float64 copy of the maps (the negatives, sorted in place);
no full-size argsort or label volume is kept.

Conventions (inputs): ``masks`` is (N, H, W) with values in {0, 1} (bool, int or float);
``maps`` is (N, H, W) float, converted to float64 (CFLOW-AD/BGAD collect scores in float64: float32
ties early in training). Higher score = more anomalous.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from sklearn.metrics import auc as _sk_auc
from sklearn.metrics import roc_auc_score

__all__ = [
    "METRICS",
    "METRIC_LABELS",
    "METRIC_NAMES",
    "METRIC_SPECS",
    "METRIC_VARIANTS",
    "FLAG_TEXT",
    "DIVERGED",
    "DIVERGED_LOSS",
    "TIED",
    "TIE_SPREAD",
    "MetricSpec",
    "compute_metrics",
    "tie_flags",
    "tied",
    "image_auroc",
    "pixel_auroc",
    "pro_auc",
    "pro_auc_paper",
]


@dataclass(frozen=True)
class MetricSpec:
    """A reported metric: its key, how tables and logs name it, its exact definition, its direction.

    ``definition`` is stored next to every result, so that numbers computed with different
    definitions are never compared silently (``bgad-bench regress`` fails on a mismatch); bump its
    version on any change.
    """

    name: str
    label: str
    definition: str
    higher_is_better: bool = True
    needs_pixel_masks: bool = False


METRICS: tuple[MetricSpec, ...] = (
    MetricSpec("image_auroc", "image AUROC", "sklearn-roc-auc(image score = max of map, ties count 1/2) v1"),
    MetricSpec(
        "pixel_auroc",
        "pixel AUROC",
        "pooled-pixel-roc-auc(all test pixels, ties count 1/2, == sklearn roc_auc_score) v1",
        needs_pixel_masks=True,
    ),
    MetricSpec(
        "pro",
        "AU-PRO",
        "mvtec-au-pro(fpr<=0.3, /0.3, 8-conn, score>=t, all distinct thresholds) v1",
        needs_pixel_masks=True,
    ),
    MetricSpec(
        "pro_paper",
        "PRO (released code)",
        "bgad-code-pro(calculate_pro_metric: 1000 thresholds max-k*delta, score>t, overlap on "
        "hole-filled region / area, fpr<=0.3 min-max rescaled, sklearn auc) v2",
        needs_pixel_masks=True,
    ),
)
METRIC_SPECS: dict[str, MetricSpec] = {m.name: m for m in METRICS}
#: Which definition each reported metric uses (stored next to every result).
METRIC_VARIANTS: dict[str, str] = {m.name: m.definition for m in METRICS}
#: The metrics every evaluation reports (where defined), in the order tables show them.
METRIC_NAMES: tuple[str, ...] = tuple(METRIC_SPECS)
#: How tables, figures and logs name each metric.
METRIC_LABELS: dict[str, str] = {m.name: m.label for m in METRICS}

#: A metric whose value means nothing is kept in the record as NaN with one of these flags beside it
#: (``flags`` of an evaluation): ``diverged`` (the training loss blew up: every metric of that
#: evaluation), ``tied`` (its scores are all equal up to :data:`TIE_SPREAD`; the AUROC of such
#: scores is an accident of rounding, e.g. 0.380 from 25 image scores within 2e-5 of each other).
DIVERGED = "diverged"
TIED = "tied"
#: How tables, logs and the CLI show a flagged value in place of a number.
FLAG_TEXT: dict[str, str] = {DIVERGED: "diverged", TIED: "tied (—)"}
#: Scores whose spread (max − min) is at most this fraction of their magnitude count as tied.
TIE_SPREAD = 1e-4
#: A mean training loss above this (or not finite) since the last evaluation means the model diverged.
DIVERGED_LOSS = 1e6

# 8-connectivity, as MVTec's evaluation code (scipy, 3x3 ones) and skimage.measure.label(mask)
# (default connectivity = ndim = 2) in the released code both use.
_STRUCTURE_8 = np.ones((3, 3), dtype=bool)


# --------------------------------------------------------------------------------------------------
# validation


def _check_finite(name: str, values: np.ndarray) -> None:
    if not np.isfinite(values).all():
        raise ValueError(f"{name} contains NaN or infinite values")


def _check_binary(name: str, values: np.ndarray) -> None:
    if values.dtype == bool:
        return
    if not ((values == 0) | (values == 1)).all():
        raise ValueError(f"{name} must be binary (values in {{0, 1}}); got other values")


def _validate_pixel_inputs(masks: np.ndarray, maps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return (ground truth as bool, maps as float64), copying only where the dtype forces it."""
    masks = np.asarray(masks)
    maps = np.asarray(maps, dtype=np.float64)
    if masks.ndim != 3:
        raise ValueError(f"masks must have shape (N, H, W); got shape {masks.shape}")
    if maps.ndim != 3:
        raise ValueError(f"maps must have shape (N, H, W); got shape {maps.shape}")
    if masks.shape != maps.shape:
        raise ValueError(f"shape mismatch: masks {masks.shape} vs maps {maps.shape}")
    if maps.size == 0:
        raise ValueError("masks and maps are empty")
    _check_binary("masks", masks)
    _check_finite("maps", maps)
    return masks.astype(bool, copy=False), maps


def _check_fpr_limit(fpr_limit: float) -> None:
    if not 0.0 < fpr_limit <= 1.0:
        raise ValueError(f"fpr_limit must be in (0, 1]; got {fpr_limit}")


# --------------------------------------------------------------------------------------------------
# shared preparation: one sort of the negatives, the positives with their region weights


@dataclass(frozen=True)
class _PixelSets:
    """Everything the pixel metrics need, computed once per evaluation.

    ``pos_weight[i]`` is ``1 / area`` of the ground-truth region holding the i-th positive pixel, so
    that summing weights over the positives above a threshold and dividing by ``n_regions`` gives the
    mean per-region overlap (PRO) at that threshold, for every threshold at once via cumulative sums.
    ``filled_sorted``/``filled_weight`` are the same pairs for the released code's overlap, which
    counts the pixels of each region's hole-filled image (still over the unfilled area): one pair
    per (region, pixel of its filled image). Without holes they are the positives' arrays.
    """

    neg_sorted: np.ndarray  # float64 scores of ground-truth-negative pixels, ascending
    pos_sorted: np.ndarray  # float64 scores of ground-truth-positive pixels, ascending
    pos_weight: np.ndarray | None  # 1/area of each positive pixel's region (aligned), or None
    filled_sorted: np.ndarray | None  # scores of the pixels of every region's hole-filled image, ascending
    filled_weight: np.ndarray | None  # 1/area (unfilled) of that region, aligned
    n_regions: int
    lo: float  # min over all maps
    hi: float  # max over all maps


def _sorted_pairs(scores: list[np.ndarray], weights: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate (score, weight) parts and sort them by score (stable)."""
    if not scores:
        return np.empty(0), np.empty(0)
    s, w = np.concatenate(scores), np.concatenate(weights)
    order = np.argsort(s, kind="stable")
    return s[order], w[order]


def _filled_region_pairs(
    image_map: np.ndarray, lab: np.ndarray, area: np.ndarray
) -> tuple[np.ndarray, np.ndarray] | None:
    """Scores and 1/area weights of each region's hole-filled pixels (skimage's ``image_filled``:
    ``binary_fill_holes`` of the region's bounding-box crop with the 3×3 structure), or None when no
    region of the image has a hole (the pairs are then the positives' own). Filling the small crops
    costs a fraction of one fill of the whole image."""
    boxes = ndimage.find_objects(lab)
    filled = [
        ndimage.binary_fill_holes(lab[box] == r, structure=_STRUCTURE_8) for r, box in enumerate(boxes, 1)
    ]
    if sum(int(f.sum()) for f in filled) == int(area[1:].sum()):
        return None
    scores = [image_map[box][f] for box, f in zip(boxes, filled, strict=True)]
    weights = [np.full(part.size, 1.0 / area[r]) for r, part in enumerate(scores, start=1)]
    return np.concatenate(scores), np.concatenate(weights)


def _split_pixels(gt: np.ndarray, maps: np.ndarray, with_regions: bool) -> _PixelSets:
    neg = maps[~gt]  # the one full-size copy we make; sorted in place
    neg.sort()
    if not with_regions:
        pos = maps[gt]
        pos.sort()
        weight = filled = filled_weight = None
        n_regions = 0
    else:
        # Label each image's mask ONCE (8-connectivity). Regions never span images.
        scores_parts: list[np.ndarray] = []
        weight_parts: list[np.ndarray] = []
        filled_parts: list[np.ndarray] = []
        filled_weight_parts: list[np.ndarray] = []
        any_holes = False
        n_regions = 0
        for i in range(gt.shape[0]):
            m = gt[i]
            if not m.any():
                continue
            lab, k = ndimage.label(m, structure=_STRUCTURE_8)
            ids = lab[m]  # region id (1..k) of each positive pixel, row-major
            area = np.bincount(ids, minlength=k + 1).astype(np.float64)
            weight_parts.append(1.0 / area[ids])
            scores_parts.append(maps[i][m])
            pairs = _filled_region_pairs(maps[i], lab, area)
            any_holes |= pairs is not None
            f_scores, f_weights = pairs or (scores_parts[-1], weight_parts[-1])
            filled_parts.append(f_scores)
            filled_weight_parts.append(f_weights)
            n_regions += k
        pos, weight = _sorted_pairs(scores_parts, weight_parts)
        if any_holes:
            filled, filled_weight = _sorted_pairs(filled_parts, filled_weight_parts)
        else:
            filled, filled_weight = pos, weight
    lo = min(neg[0] if neg.size else np.inf, pos[0] if pos.size else np.inf)
    hi = max(neg[-1] if neg.size else -np.inf, pos[-1] if pos.size else -np.inf)
    return _PixelSets(neg, pos, weight, filled, filled_weight, n_regions, float(lo), float(hi))


def _require_both_classes(s: _PixelSets) -> None:
    if s.pos_sorted.size == 0:
        raise ValueError("masks contain no anomalous pixel: pixel AUROC and PRO are undefined")
    if s.neg_sorted.size == 0:
        raise ValueError("masks contain no normal pixel: the false-positive rate is undefined")


# --------------------------------------------------------------------------------------------------
# image level


def image_auroc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Image-level AUROC (sklearn ``roc_auc_score``); ``labels`` 1 = anomalous, ``scores`` higher = more
    anomalous. Tied scores count 1/2, which is why scores tied up to rounding are flagged ``tied``
    (docs/metrics.md)."""
    labels = np.asarray(labels)
    scores = np.asarray(scores, dtype=np.float64)
    if labels.ndim != 1 or scores.ndim != 1:
        raise ValueError(f"labels and scores must be 1-D; got shapes {labels.shape} and {scores.shape}")
    if labels.shape != scores.shape:
        raise ValueError(f"shape mismatch: labels {labels.shape} vs scores {scores.shape}")
    _check_binary("labels", labels)
    _check_finite("scores", scores)
    y = labels.astype(bool, copy=False)
    if y.all() or not y.any():
        raise ValueError("labels must contain both normal (0) and anomalous (1) images")
    return float(roc_auc_score(y, scores))


# --------------------------------------------------------------------------------------------------
# pixel AUROC


def _pixel_auroc_from_sets(s: _PixelSets) -> float:
    # Mann-Whitney form of the ROC area: P(pos > neg) + 1/2 P(pos == neg). This is exactly the
    # trapezoid area of the tie-collapsed ROC curve that sklearn computes, but needs only the sorted
    # negatives (no argsort of all pixels, no float cumsum copies), and is exact in integers.
    _require_both_classes(s)
    below = np.searchsorted(s.neg_sorted, s.pos_sorted, side="left").sum(dtype=np.int64)
    below_or_eq = np.searchsorted(s.neg_sorted, s.pos_sorted, side="right").sum(dtype=np.int64)
    n_pos, n_neg = s.pos_sorted.size, s.neg_sorted.size
    return (int(below) + int(below_or_eq)) / (2 * n_pos * n_neg)


def pixel_auroc(masks: np.ndarray, maps: np.ndarray) -> float:
    """Pixel-level AUROC with all test pixels of all images pooled (docs/metrics.md).

    Equal to ``roc_auc_score(masks.ravel(), maps.ravel())`` (ties count 1/2), computed from one sorted
    copy of the negatives so that ~200 maps of 256² (13 M pixels) need ~100 MB, not ~1 GB.
    """
    gt, maps = _validate_pixel_inputs(masks, maps)
    return _pixel_auroc_from_sets(_split_pixels(gt, maps, with_regions=False))


# --------------------------------------------------------------------------------------------------
# exact MVTec AU-PRO


def _trapezoid_to(x: np.ndarray, y: np.ndarray, x_max: float) -> float:
    """Trapezoid area under the piecewise-linear curve (x ascending, repeats allowed) from x[0] to
    ``x_max``, with linear interpolation at ``x_max``: the MVTec evaluation code's ``trapezoid``."""
    correction = 0.0
    if not np.any(x == x_max):
        ins = int(np.searchsorted(x, x_max, side="right"))  # == bisect.bisect(x, x_max)
        assert 0 < ins < len(x)
        y_interp = y[ins - 1] + (y[ins] - y[ins - 1]) * (x_max - x[ins - 1]) / (x[ins] - x[ins - 1])
        correction = 0.5 * (y_interp + y[ins - 1]) * (x_max - x[ins - 1])
    keep = x <= x_max
    x, y = x[keep], y[keep]
    return float(np.sum(0.5 * (y[1:] + y[:-1]) * (x[1:] - x[:-1])) + correction)


def _pro_curve(s: _PixelSets, fpr_limit: float) -> tuple[np.ndarray, np.ndarray]:
    """(FPR, PRO) curve of the MVTec AU-PRO up to just past ``fpr_limit``.

    Threshold convention: a pixel is positive at threshold t when score >= t (as MVTec's code, whose
    descending cumulative sums keep the last pixel of each tie group); tied scores move together.
    The curve over all distinct scores only gains area where the FPR changes, i.e. at distinct
    *negative* scores v: there it goes from (FPR(>v), PRO(>v)) to (FPR(>=v), PRO(>=v)); between two
    such v it is vertical (positive-only scores), which adds no area. So the points at distinct
    negative scores, read off the sorted negatives and the region-weight suffix sums of the sorted
    positives, give exactly the same trapezoid integral as the full sweep -- and the sweep can stop
    once the FPR passes ``fpr_limit``.
    """
    neg, pos, w = s.neg_sorted, s.pos_sorted, s.pos_weight
    assert w is not None
    n_neg = neg.size
    # Highest scores first: keep the top ceil(limit*n)+2 negatives, extended down to a whole tie
    # group, so the segment that crosses fpr_limit is complete.
    need = min(n_neg, int(np.ceil(fpr_limit * n_neg)) + 2)
    cut = int(np.searchsorted(neg, neg[n_neg - need], side="left"))
    tail = neg[cut:]
    starts = np.empty(tail.size, dtype=bool)
    starts[0] = True
    np.not_equal(tail[1:], tail[:-1], out=starts[1:])
    first = np.flatnonzero(starts) + cut  # first index of each distinct negative value (ascending)
    vals = neg[first]
    after = np.append(first[1:], n_neg)  # one past its last index
    fpr_ge = (n_neg - first) / n_neg
    fpr_gt = (n_neg - after) / n_neg
    # suffix[i] = total weight of positives pos[i:]; PRO(>=v) uses the first pos >= v, PRO(>v) > v.
    suffix = np.zeros(pos.size + 1)
    suffix[:-1] = np.cumsum(w[::-1])[::-1]
    pro_ge = suffix[np.searchsorted(pos, vals, side="left")] / s.n_regions
    pro_gt = suffix[np.searchsorted(pos, vals, side="right")] / s.n_regions
    k = vals.size
    x = np.empty(2 * k + 2)
    y = np.empty(2 * k + 2)
    x[0] = y[0] = 0.0  # threshold +inf
    x[1:-1:2], x[2:-1:2] = fpr_gt[::-1], fpr_ge[::-1]  # descending thresholds = ascending FPR
    y[1:-1:2], y[2:-1:2] = pro_gt[::-1], pro_ge[::-1]
    x[-1] = y[-1] = 1.0  # threshold -inf
    np.clip(x, None, 1.0, out=x)
    np.clip(y, None, 1.0, out=y)
    return x, y


def _pro_auc_from_sets(s: _PixelSets, fpr_limit: float) -> float:
    _check_fpr_limit(fpr_limit)
    _require_both_classes(s)
    x, y = _pro_curve(s, fpr_limit)
    return _trapezoid_to(x, y, fpr_limit) / fpr_limit


def pro_auc(masks: np.ndarray, maps: np.ndarray, fpr_limit: float = 0.3) -> float:
    """Exact MVTec AU-PRO: area under PRO(FPR) for FPR in [0, fpr_limit], divided by fpr_limit.

    Regions are the 8-connected components of each image's mask, pooled over all images; PRO(t) is
    the mean over regions of the fraction of the region's pixels with score >= t; FPR(t) the fraction
    of all ground-truth-negative pixels (normal images included) with score >= t. Every distinct score
    is a threshold (ties move together), the curve starts at (0, 0) and ends at (1, 1), and it is
    integrated by the trapezoid rule with linear interpolation at ``fpr_limit`` -- the same numbers as
    MVTec's ``compute_pro`` + ``trapezoid``. Depends on the scores only through their order, hence
    invariant to strictly increasing transforms. 1 = perfect, 0 = all regions scored below all
    normal pixels.

    Raises ValueError when no pixel (or no normal pixel) is annotated anomalous.
    """
    gt, maps = _validate_pixel_inputs(masks, maps)
    return _pro_auc_from_sets(_split_pixels(gt, maps, with_regions=True), fpr_limit)


# --------------------------------------------------------------------------------------------------
# the released code's PRO


def _nan_with_warning(why: str) -> float:
    warnings.warn(f"pro_auc_paper is undefined here ({why}); returning NaN", RuntimeWarning, stacklevel=3)
    return float("nan")


def _pro_auc_paper_from_sets(s: _PixelSets, num_thresholds: int, fpr_limit: float) -> float:
    _check_fpr_limit(fpr_limit)
    if int(num_thresholds) != num_thresholds or num_thresholds < 1:
        raise ValueError(f"num_thresholds must be a positive integer; got {num_thresholds}")
    _require_both_classes(s)
    assert s.filled_sorted is not None and s.filled_weight is not None
    min_th, max_th = np.float64(s.lo), np.float64(s.hi)
    delta = (max_th - min_th) / num_thresholds
    if delta == 0:  # every threshold is the maximum: 0/0 in the released code's rescale
        return _nan_with_warning("all map values are equal")
    ths = max_th - np.arange(num_thresholds) * delta  # the released code's thresholds, descending
    asc = ths[::-1]
    n_neg = s.neg_sorted.size
    # FPR(th) = #negatives with score > th / #negatives  (strict '>', as `scores > thred`)
    fprs = ((n_neg - np.searchsorted(s.neg_sorted, asc, side="right")) / n_neg)[::-1]
    # A filled-region pixel with score p is "> asc[j]" exactly for j < k(p), k(p) = #{j: asc[j] < p}.
    # Summing its region weight 1/area into bin k(p) and taking suffix sums gives, for every j,
    # sum over regions of (#filled pixels > asc[j]) / area -- the per-region overlaps, all at once.
    kp = np.searchsorted(asc, s.filled_sorted, side="left")
    per_k = np.bincount(kp, weights=s.filled_weight, minlength=asc.size + 1)
    above = np.cumsum(per_k[::-1])[::-1]  # above[j] = sum of per_k[j:]
    pros = (above[1:] / s.n_regions)[::-1]  # threshold j counts bins k > j; back to descending
    keep = fprs <= fpr_limit
    if keep.sum() < 2:  # sklearn.metrics.auc raises here in the released code
        return _nan_with_warning(f"fewer than two thresholds have FPR <= {fpr_limit}")
    kept = fprs[keep]
    if kept.max() == kept.min():  # 0/0 in the released code's min-max rescale
        return _nan_with_warning(f"all kept thresholds have the same FPR ({kept[0]})")
    kept = (kept - kept.min()) / (kept.max() - kept.min())
    return float(_sk_auc(kept, pros[keep]))


def pro_auc_paper(
    masks: np.ndarray, maps: np.ndarray, num_thresholds: int = 1000, fpr_limit: float = 0.3
) -> float:
    """PRO as computed by the authors' released code (BGAD's ``calculate_pro_metric``), reproduced
    exactly but without its per-threshold relabelling:

    thresholds ``max - k·δ`` for k = 0…``num_thresholds``-1, δ = (max - min) / ``num_thresholds``
    over all maps; at each, pixels with score strictly ``>`` the threshold are positive; a region's
    overlap = positive pixels of its hole-filled image (skimage ``image_filled``, 8-connected) / its
    area, so a predicted hole counts; PRO = mean over all 8-connected regions of all images; FPR over
    all normal pixels; keep thresholds with FPR <= ``fpr_limit``, min-max rescale those FPRs to
    [0, 1] and return ``sklearn.metrics.auc``. (CFLOW-AD's ``cal_pro_score`` differs in the grid,
    ``min + j·δ``, keeps FPR < limit and does not fill holes.)

    Not the MVTec AU-PRO (see :func:`pro_auc`): the rescaling stretches whatever FPR range the
    uniform score grid happens to hit to [0, 1], so the value changes under monotone transforms of
    the scores, and with filled holes an overlap can exceed 1. Reported as ``pro_paper`` only for
    comparison with the paper's tables.

    Returns NaN (with a RuntimeWarning) where the released code yields NaN or crashes: constant maps,
    fewer than two kept thresholds, or all kept FPRs equal (e.g. a perfect detector whose normal
    pixels all share one score). Raises ValueError when no pixel is annotated anomalous.
    """
    gt, maps = _validate_pixel_inputs(masks, maps)
    return _pro_auc_paper_from_sets(_split_pixels(gt, maps, with_regions=True), num_thresholds, fpr_limit)


# --------------------------------------------------------------------------------------------------


def tied(scores: np.ndarray) -> bool:
    """Whether ``scores`` are all equal up to rounding: spread (max − min) at most :data:`TIE_SPREAD`
    of their magnitude (max |score|, or 1 when that is 0).

    Why relative: flows' scores are differences of summed probabilities (values near the number of
    levels), so an untrained or collapsed flow gives scores that differ only in the last digits; a
    ranking of those digits is no measurement of the detector.
    """
    values = np.asarray(scores, dtype=np.float64)
    lo, hi = float(values.min()), float(values.max())
    return hi - lo <= TIE_SPREAD * (max(abs(lo), abs(hi)) or 1.0)


def tie_flags(image_scores: np.ndarray, maps: np.ndarray | None = None) -> dict[str, str]:
    """``{metric: "tied"}`` for each metric whose scores are tied (see :func:`tied`): the image AUROC
    reads the image scores, the pixel AUROC and both PROs the maps."""
    flags = {"image_auroc": TIED} if tied(image_scores) else {}
    if maps is not None and tied(maps):
        flags |= {m.name: TIED for m in METRICS if m.needs_pixel_masks}
    return flags


def compute_metrics(
    labels: np.ndarray,
    image_scores: np.ndarray,
    masks: np.ndarray | None = None,
    maps: np.ndarray | None = None,
) -> dict[str, float]:
    """All metrics of one evaluation, as ``{"image_auroc", "pixel_auroc", "pro", "pro_paper"}``.

    Pixel entries are present only when both ``masks`` and ``maps`` are given and some mask is
    non-empty (image-level datasets have no masks). A metric whose scores are tied (:func:`tie_flags`)
    is undefined: NaN, never a number that only ranks rounding errors. The negatives are sorted and
    the components labelled once for all three pixel metrics. See :data:`METRIC_VARIANTS` for the
    definitions.
    """
    auroc = image_auroc(labels, image_scores)  # validates the scores before they are judged
    flags = tie_flags(image_scores, maps)
    out: dict[str, float] = {"image_auroc": math.nan if "image_auroc" in flags else auroc}
    if masks is None and maps is None:
        return out
    if masks is None or maps is None:
        raise ValueError("pass both masks and maps, or neither")
    gt, maps = _validate_pixel_inputs(masks, maps)
    if gt.shape[0] != np.shape(labels)[0]:
        raise ValueError(f"masks hold {gt.shape[0]} images but labels {np.shape(labels)[0]}")
    if not gt.any():
        return out
    if "pixel_auroc" in flags:
        return out | {m.name: math.nan for m in METRICS if m.needs_pixel_masks}
    sets = _split_pixels(gt, maps, with_regions=True)
    out["pixel_auroc"] = _pixel_auroc_from_sets(sets)
    out["pro"] = _pro_auc_from_sets(sets, 0.3)
    out["pro_paper"] = _pro_auc_paper_from_sets(sets, 1000, 0.3)
    return out
