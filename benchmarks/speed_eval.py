"""Item 3 of the speed benchmark: test-set scoring, batched vs batch-1 images/s, with the maps compared:
pure batching from the same cached features (in this process), then ours vs the released way from the
image files (each in a fresh process)."""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch

from benchmarks.released_way import (
    ReleasedBackbone,
    ReleasedEncoder,
    released_config,
    score_batch1,
    untrained,
)
from benchmarks.speed_common import TARGETS, Item, in_child, make_slice, say, sync, table, verdict
from benchmarks.speed_flow import b6_flow_forward_floor
from bgad.backbones import create_backbone
from bgad.bench.config import RunConfig
from bgad.bench.method_registry import METHODS
from bgad.data.datasets import load_category
from bgad.features import FeatureCache
from bgad.flow_detector import FlowDetector
from bgad.scoring import Scores, anomaly_maps

T = TypeVar("T")


def item3_setup(
    a: argparse.Namespace, device: torch.device, released: bool
) -> tuple[list[Path], ReleasedBackbone, FlowDetector]:
    """Test paths, the side's encoder (as a ``ReleasedBackbone``) and an untrained BGAD detector
    (the same flows for every side: initialised from the seed alone)."""
    n_test, size = (6, 64) if a.smoke else (30, 256)
    root = make_slice(6 if a.smoke else 20, n_test // 2, n_test - n_test // 2)
    paths = [s.image_path for s in load_category("aitex", "aitex", root).test][:n_test]
    cfg = RunConfig.of(
        method="bgad",
        backbone="tf_efficientnet_b6",
        random_weights=True,
        input_size=size,
        threads=a.threads,
        seed=0,
    )
    if released:
        cfg = released_config(cfg)
    torch.manual_seed(0)
    extractor = ReleasedEncoder(cfg) if released else create_backbone(cfg.backbone, random_weights=True)
    source = ReleasedBackbone(extractor.to(device), size, device)
    det = untrained(METHODS.get("bgad").build(cfg, device), source)
    extractor(torch.rand(1, 3, size, size, device=device))  # warm-up
    return paths, source, det


def timed(device: torch.device, fn: Callable[[], T]) -> tuple[T, float]:
    sync(device)
    start = time.perf_counter()
    out = fn()
    sync(device)
    return out, time.perf_counter() - start


def item3_side(a: argparse.Namespace, device: torch.device, side: str) -> dict:
    """``ours``: batched backbone + batched flows from image files, and the flows alone from the
    cached features; ``released``: batch-1 backbone + flows per image (the released code's way)."""
    paths, source, det = item3_setup(a, device, released=side == "released")
    size = source.size
    if side == "released":
        scores, seconds = timed(device, lambda: score_batch1(det, source, paths))
        return {"n": len(paths), "seconds_from_files": seconds, "maps": scores.maps}
    cache = FeatureCache(source.extractor, size)
    feats, t_feats = timed(device, lambda: cache.features(paths))
    scores, t_flows = timed(device, lambda: det.score(feats, (size, size)))
    # the backbone's own batching gain, and the bound it sets on the from-files ratio
    _, t_feats_batch1 = timed(
        device, lambda: FeatureCache(source.extractor, size, batch_size=1).features(paths)
    )
    return {
        "n": len(paths),
        "seconds_from_files": t_feats + t_flows,
        "seconds_cached_features": t_flows,
        "seconds_backbone": t_feats,
        "seconds_backbone_batch1": t_feats_batch1,
        "batch_size": cache.batch_size,
        "maps": scores.maps,
    }


def compare(x: np.ndarray, y: np.ndarray) -> dict:
    diff = np.abs(x - y)
    return {
        "max_abs_map_diff": float(diff.max()),
        "max_rel_map_diff": float(diff.max() / max(np.abs(y).max(), 1e-300)),
        "identical": bool(np.array_equal(x, y)),
    }


def pure_batching(a: argparse.Namespace, device: torch.device) -> tuple[int, int, dict]:
    """(images, size, row): the same features and flows, batched vs one image at a time, in this process."""
    paths, source, det = item3_setup(a, device, released=False)
    size = source.size
    feats = FeatureCache(source.extractor, size).features(paths)
    batched, t_batched = timed(device, lambda: det.score(feats, (size, size)))

    def batch1_cached() -> Scores:
        per_level: list[list[np.ndarray]] = [[] for _ in feats]
        for i in range(len(paths)):
            for level, ll in enumerate(det.log_likelihoods([f[i : i + 1] for f in feats])):
                per_level[level].append(ll)
        return anomaly_maps([np.concatenate(p) for p in per_level], (size, size))

    b1_cached, t_b1_cached = timed(device, batch1_cached)
    n = len(paths)
    row = {
        "case": "pure batching: flows + maps from the same cached features, batched vs one image at a time",
        "batched_img_s": n / t_batched,
        "batch1_img_s": n / t_b1_cached,
        "ratio": t_b1_cached / t_batched,
        **compare(batched.maps, b1_cached.maps),
    }
    return n, size, row


def released_rows(n: int, ours: dict, released: dict) -> list[dict]:
    """Ours vs the released way: from image files, and per evaluation as a run does it."""
    return [
        {
            "case": f"from image files: ours (backbone in batches of {ours['batch_size']} + batched flows) vs "
            "released (batch-1 backbone + flows per image)",
            "batched_img_s": n / ours["seconds_from_files"],
            "batch1_img_s": n / released["seconds_from_files"],
            "ratio": released["seconds_from_files"] / ours["seconds_from_files"],
            **compare(ours["maps"], released["maps"]),
        },
        {
            "case": "per evaluation as run: ours (test features cached once per run, batched flows) vs released",
            "batched_img_s": n / ours["seconds_cached_features"],
            "batch1_img_s": n / released["seconds_from_files"],
            "ratio": released["seconds_from_files"] / ours["seconds_cached_features"],
            **compare(ours["maps"], released["maps"]),
        },
    ]


def item3(a: argparse.Namespace, device: torch.device) -> dict:
    n, size, pure = pure_batching(a, device)
    say(f"  [3] released way (batch-1) on {device.type} (fresh process) ...")
    released = in_child(a, "item3:released", device)
    say(f"  [3] ours (batched) on {device.type} (fresh process) ...")
    ours = in_child(a, "item3:ours", device)
    rows = [pure, *released_rows(n, ours, released)]
    return {
        "device": device.type,
        "setup": f"{n} AITEX test images at {size}², B6 random weights, untrained BGAD flows (seed 0)",
        "rows": rows,
        "ratio": rows[1]["ratio"],
        "target": TARGETS["eval"].bound,
        "pass_speed": TARGETS["eval"].ok(rows[1]["ratio"]),
        "pass_as_run": TARGETS["eval"].ok(rows[2]["ratio"]),
        "identical_same_features": rows[0]["identical"],
        "backbone_batch_size": ours["batch_size"],
        "backbone_ms_per_img": 1000 * ours["seconds_backbone"] / n,
        "backbone_batch1_ms_per_img": 1000 * ours["seconds_backbone_batch1"] / n,
        "backbone_batching_gain": ours["seconds_backbone_batch1"] / ours["seconds_backbone"],
        # what the from-files ratio would be if our flows and maps cost nothing
        "ceiling_from_files": released["seconds_from_files"] / ours["seconds_backbone"],
    }


# --------------------------------------------------------------------------------------------------
# report


def summary(res: dict) -> list[list]:
    target = TARGETS["eval"].label
    rows = []
    for d in res.get("item3", []):
        rows.append(
            [
                f"3. evaluation from image files, batched vs batch-1 ({d['device']})",
                target,
                f"{d['ratio']:.2f}×",
                verdict(d["pass_speed"]),
            ]
        )
        rows.append(
            [
                f"3. evaluation as run (test features cached once per run) vs batch-1 ({d['device']})",
                target,
                f"{d['rows'][2]['ratio']:.2f}×",
                verdict(d["pass_as_run"]),
            ]
        )
    return rows


def rows_table(d: dict) -> list[str]:
    header = ["case", "batched img/s", "batch-1 img/s", "ratio", "max abs map diff", "max rel map diff"]
    rows = [
        [
            r["case"],
            r["batched_img_s"],
            r["batch1_img_s"],
            f"{r['ratio']:.2f}×",
            r["max_abs_map_diff"],
            r["max_rel_map_diff"],
            "yes" if r["identical"] else "no",
        ]
        for r in d["rows"]
    ]
    return table([*header, "identical"], rows)


def bounds(d: dict, res: dict) -> list[str]:
    """What bounds the from-files ratio: the backbone alone, then the flows at the matmul rate."""
    L = [
        f"What bounds the from-files row here: our backbone alone takes {d['backbone_ms_per_img']:.0f} ms "
        f"per image in batches of {d['backbone_batch_size']} and "
        f"{d['backbone_batch1_ms_per_img']:.0f} ms one image at a time (batching gains "
        f"{d['backbone_batching_gain']:.2f}×: one image already keeps every core busy), so even with flows "
        f"and maps that cost nothing the from-files ratio could reach only {d['ceiling_from_files']:.2f}×.",
        "",
    ]
    floor = b6_flow_forward_floor(res, d["device"])
    if floor is not None:
        released_ms = 1000 / d["rows"][1]["batch1_img_s"]
        L += [
            f"The flows themselves cannot cost nothing: their forward pass is {floor[0]:.2f} GFLOP per image "
            f"(item 2's executed count), {floor[1]:.0f} ms at the measured matmul rate. With the backbone as "
            f"measured and the flows at that rate, the from-files ratio would be "
            f"{released_ms / (d['backbone_ms_per_img'] + floor[1]):.2f}× (released {released_ms:.0f} ms per "
            "image).",
            "",
        ]
    return L


def device_section(d: dict, res: dict) -> list[str]:
    L = [f"### 3. Evaluation ({d['device']})", "", d["setup"] + ".", ""] + rows_table(d)
    L += [
        f"Target ({TARGETS['eval'].label}, judged on the from-image-files row, backbone included): "
        f"{verdict(d['pass_speed'])}; "
        f"per evaluation as run: {d['rows'][2]['ratio']:.2f}× ({verdict(d['pass_as_run'])}). Maps from the "
        f"same features and flows are {'bit-identical' if d['identical_same_features'] else 'NOT identical'} "
        "batched and one image at a time; ours and the released way's differ only by float rounding "
        "(backbone batch and layout, summation order of the positional term).",
        "",
    ]
    return L + bounds(d, res)


def section(res: dict) -> list[str]:
    return [line for d in res.get("item3", []) for line in device_section(d, res)]


ITEM = Item(3, item3, per_device=True, section=section, summary=summary, worker=item3_side)
