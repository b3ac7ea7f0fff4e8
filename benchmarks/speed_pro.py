"""Item 4 of the speed benchmark: ``pro_auc`` and ``pro_auc_paper`` vs the released per-threshold
connected-component loop (``released_way.released_bgad_pro``) on synthetic maps; the values checked
against the loop and against a float64 transcription of MVTec AD's ``compute_pro``."""

from __future__ import annotations

import argparse

import numpy as np
from scipy import ndimage

from benchmarks.released_way import released_bgad_pro
from benchmarks.speed_common import TARGETS, Item, best_time, fmt, table, verdict
from bgad.metrics import pro_auc, pro_auc_paper


def synthetic_maps(n: int, size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Half the images with 1–3 elliptic defects; maps = smoothed noise + a bump inside the defects."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    masks = np.zeros((n, size, size), np.uint8)
    maps = np.empty((n, size, size))
    for i in range(n):
        if i % 2:
            for _ in range(rng.integers(1, 4)):
                cy, cx = rng.uniform(0.1, 0.9, 2) * size
                ry, rx = rng.uniform(0.02, 0.12, 2) * size
                masks[i][((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1] = 1
        noise = ndimage.gaussian_filter(rng.normal(size=(size, size)), 2)
        maps[i] = noise + 0.8 * ndimage.gaussian_filter(masks[i].astype(float), 3) * rng.uniform(0.2, 1.5)
    return masks, maps


def mvtec_reference_pro(masks: np.ndarray, maps: np.ndarray, fpr_limit: float = 0.3) -> float:
    """MVTec AD's ``compute_pro`` + ``trapezoid`` (label once, one sort), in float64: the value reference."""
    fp_changes = np.zeros(maps.shape, np.float64)
    pro_changes = np.zeros(maps.shape, np.float64)
    n_ok = n_regions = 0
    for i, gt in enumerate(masks):
        labeled, k = ndimage.label(gt, np.ones((3, 3), int))
        n_regions += k
        ok = labeled == 0
        n_ok += ok.sum()
        fp_changes[i][ok] = 1
        for r in range(k):
            region = labeled == r + 1
            pro_changes[i][region] = 1.0 / region.sum()
    scores = maps.ravel()
    order = np.argsort(scores, kind="stable")[::-1]
    scores = scores[order]
    fprs = np.cumsum(fp_changes.ravel()[order]) / n_ok
    pros = np.cumsum(pro_changes.ravel()[order]) / n_regions
    keep = np.append(np.diff(scores) != 0, True)
    fprs = np.concatenate(([0.0], np.clip(fprs[keep], None, 1.0), [1.0]))
    pros = np.concatenate(([0.0], np.clip(pros[keep], None, 1.0), [1.0]))
    correction = 0.0
    if not np.any(fprs == fpr_limit):
        ins = int(np.searchsorted(fprs, fpr_limit, side="right"))
        y_int = pros[ins - 1] + (pros[ins] - pros[ins - 1]) * (fpr_limit - fprs[ins - 1]) / (
            fprs[ins] - fprs[ins - 1]
        )
        correction = 0.5 * (y_int + pros[ins - 1]) * (fpr_limit - fprs[ins - 1])
    sel = fprs <= fpr_limit
    x, y = fprs[sel], pros[sel]
    return float((np.sum(0.5 * (y[1:] + y[:-1]) * (x[1:] - x[:-1])) + correction) / fpr_limit)


def pro_auc_ok(d: dict) -> bool:
    """``pro_auc``: fast enough and equal to the MVTec reference."""
    return TARGETS["pro"].ok(d["pro_auc"]["ratio"]) and TARGETS["pro_value"].ok(
        d["pro_auc"]["abs_diff_vs_reference"]
    )


def pro_auc_paper_ok(d: dict) -> bool:
    """``pro_auc_paper``: fast enough and equal to the loop's value (when the loop computed one)."""
    return TARGETS["pro"].ok(d["pro_auc_paper"]["ratio"]) and (
        d["loop_value"] is None or TARGETS["pro_value"].ok(d["pro_auc_paper"]["abs_diff_vs_loop"])
    )


def item4(a: argparse.Namespace) -> dict:
    n, size = (10, 64) if a.smoke else (100, 256)
    masks, maps = synthetic_maps(n, size)
    reps = 1 if a.smoke else 3
    exact, t_exact = best_time(lambda: pro_auc(masks, maps), reps)
    paper, t_paper = best_time(lambda: pro_auc_paper(masks, maps), reps)
    timed = a.pro_thresholds if a.pro_thresholds < 1000 else None
    loop = released_bgad_pro(masks, maps, n_timed=timed)
    ref = mvtec_reference_pro(masks, maps)
    loop_value = loop["value"]
    if loop_value is None:
        note = (
            "Released loop timed on a threshold subset; its value is not computed (use --pro-thresholds 1000)"
        )
    else:
        note = "Released loop over all 1000 thresholds"
    t_loop = loop["seconds"]
    d = {
        "setup": f"{n} maps of {size}² (half with 1–3 elliptic defects), fixed seed; released loop: 1000 "
        f"thresholds, {loop['n_timed']} timed"
        + (" (time extrapolated linearly)" if loop["extrapolated"] else ""),
        "note": note,
        "loop_seconds": t_loop,
        "loop_seconds_measured": loop["seconds_timed"],
        "loop_extrapolated": loop["extrapolated"],
        "loop_value": loop_value,
        "pro_auc": {
            "value": exact,
            "seconds": t_exact,
            "ratio": t_loop / t_exact,
            "reference_value": ref,
            "abs_diff_vs_reference": abs(exact - ref),
        },
        "pro_auc_paper": {
            "value": paper,
            "seconds": t_paper,
            "ratio": t_loop / t_paper,
            "abs_diff_vs_loop": None if loop_value is None else abs(paper - loop_value),
        },
        "target": TARGETS["pro"].bound,
    }
    return d | {"pass": pro_auc_ok(d) and pro_auc_paper_ok(d)}


# --------------------------------------------------------------------------------------------------
# report


def summary(res: dict) -> list[list]:
    if "item4" not in res:
        return []
    d, target = res["item4"], TARGETS["pro"].label
    return [
        ["4. pro_auc vs per-threshold loop", target, f"{d['pro_auc']['ratio']:.0f}×", verdict(pro_auc_ok(d))],
        [
            "4. pro_auc_paper vs per-threshold loop",
            target,
            f"{d['pro_auc_paper']['ratio']:.0f}×",
            verdict(pro_auc_paper_ok(d)),
        ],
    ]


def section(res: dict) -> list[str]:
    if "item4" not in res:
        return []
    d = res["item4"]
    paper_check = (
        fmt(d["pro_auc_paper"]["abs_diff_vs_loop"]) if d["loop_value"] is not None else "not computed"
    )
    rows = [
        [
            "released loop (BGAD's `calculate_pro_metric`: labels and region properties per image "
            "per threshold)",
            d["loop_seconds"],
            "1×",
            d["loop_value"],
            "extrapolated" if d["loop_extrapolated"] else "measured",
        ],
        [
            "`pro_auc` (exact AU-PRO)",
            d["pro_auc"]["seconds"],
            f"{d['pro_auc']['ratio']:.0f}×",
            d["pro_auc"]["value"],
            f"abs diff vs MVTec reference {fmt(d['pro_auc']['abs_diff_vs_reference'])}",
        ],
        [
            "`pro_auc_paper`",
            d["pro_auc_paper"]["seconds"],
            f"{d['pro_auc_paper']['ratio']:.0f}×",
            d["pro_auc_paper"]["value"],
            "abs diff vs loop " + paper_check,
        ],
    ]
    L = ["### 4. PRO", "", d["setup"] + ".", ""]
    L += table(["implementation", "seconds", "speed-up vs loop", "value", "check"], rows)
    return L + [
        d["note"]
        + " (the released way of item 1 runs the same loop). The exact AU-PRO is checked against a float64 "
        "transcription of MVTec's `compute_pro` + `trapezoid` (the loop computes only the paper variant).",
        "",
    ]


ITEM = Item(4, item4, per_device=False, section=section, summary=summary)
