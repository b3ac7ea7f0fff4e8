"""Run one cell (method × dataset × category × seed) end to end and write its self-describing folder.

The folder is written under a temporary name and renamed when complete; a failed run is renamed to
``<name>.failed`` with its error, so nothing half-written ever looks like a result.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

from bgad.allocator import tune_malloc
from bgad.backbones import create_backbone
from bgad.bench.planner import cell_id
from bgad.config import ConfigError, RunConfig
from bgad.data.images import DatasetError, read_mask
from bgad.data.registry import load_category
from bgad.data.samples import CategoryData, Sample
from bgad.features import FeatureCache, resize_mask
from bgad.method import TrainingData, downsample_masks, load_builtin_methods
from bgad.metrics import METRIC_NAMES, METRIC_VARIANTS, compute_metrics
from bgad.paths import cache_dir
from bgad.provenance import environment
from bgad.scoring import Scores
from bgad.selection import select_known_anomalies
from bgad.threads import governed_threads

SCHEMA_VERSION = 1


def _type_list(value: str | None) -> list[str] | None:
    return None if value is None else [t.strip() for t in value.split(",") if t.strip()]


def known_and_test(cfg: RunConfig, data: CategoryData) -> tuple[list[Sample], list[Sample]]:
    """The cell's known anomalies and its reduced test set (shared by every method of the cell)."""
    return select_known_anomalies(
        data.test,
        cfg.n_known_anomalies,
        cfg.seed,
        data.category,
        cfg.anomaly_selection,
        cfg.anomaly_defect_type,
        _type_list(cfg.train_types),
        _type_list(cfg.test_types),
    )


def seed_everything(seed: int) -> None:
    """Seed every global stream a library might read; our own code uses explicit generators."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def resolve_device(name: str) -> torch.device:
    """``auto`` → the GPU when one is visible, else the CPU; an unavailable GPU is a clear error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"setting device={name!r}, but torch sees no CUDA device; use device=cpu or auto")
    return torch.device(name)


def load_mask(sample: Sample, size: int) -> tuple[np.ndarray, bool]:
    """The sample's mask at size×size and whether it is a real pixel mask.

    An anomalous image without a pixel mask counts as anomalous everywhere (METHOD.md §4); the
    result records how many known anomalies were treated so.
    """
    if not sample.is_anomalous:
        return np.zeros((size, size), np.uint8), True
    if sample.mask_path is None:
        return np.ones((size, size), np.uint8), False
    with Image.open(sample.image_path) as image:  # header only: the size to check the mask against
        width, height = image.size
    return resize_mask(read_mask(sample.mask_path, expected_size=(width, height)), size), True


def _test_masks(test: list[Sample], size: int, has_masks: bool) -> np.ndarray | None:
    if not has_masks:
        return None
    return np.stack([load_mask(s, size)[0] for s in test])


def _loglik_samples(
    ll_levels: list[np.ndarray], masks: np.ndarray | None, labels: np.ndarray, n: int, seed: int
) -> dict:
    """A random sample of normal and anomalous ℓ per level (for histograms like the paper's Fig. 9)."""
    rng = np.random.default_rng(seed)
    out: dict[str, np.ndarray] = {}
    for level, ll in enumerate(ll_levels):
        h, w = ll.shape[1:]
        if masks is not None:
            lab = downsample_masks(torch.from_numpy(masks), (h, w)).numpy() > 0  # the training labels' rule
        else:
            lab = np.broadcast_to(labels[:, None, None] > 0, ll.shape)
        for name, sel in (("normal", ~lab), ("anomalous", lab)):
            values = ll[sel]
            if len(values) > n:
                values = values[rng.choice(len(values), size=n, replace=False)]
            out[f"level{level}_{name}"] = values.astype(np.float32)
    return out


def _map_samples(
    test: list[Sample], scores: Scores, masks: np.ndarray | None, cache: FeatureCache, n: int
) -> dict:
    """A few test images with their anomaly maps and masks (for panels like the paper's Fig. 4).

    The highest- and lowest-scored anomalous images and the highest-scored normal one, so a reader
    sees successes and failures; maps in float16 to keep committed results small.
    """
    labels = np.array([s.label for s in test])
    order = np.argsort(-scores.image_scores, kind="stable")
    anomalous = [i for i in order if labels[i] == 1]
    normal = [i for i in order if labels[i] == 0]
    picks = list(dict.fromkeys(anomalous[: max(n - 2, 1)] + anomalous[-1:] + normal[:1]))[:n]
    return {
        "images": np.stack([cache.load_resized(test[i].image_path) for i in picks]),
        "maps": scores.maps[picks].astype(np.float16),
        "masks": masks[picks] if masks is not None else np.zeros((len(picks), 0, 0), np.uint8),
        "labels": labels[picks],
        "scores": scores.image_scores[picks],
        "paths": np.array([str(test[i].image_path.name) for i in picks]),
    }


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def run_cell(
    cfg: RunConfig,
    out_dir: Path,
    status: Callable[[str], None] | None = None,
    progress: Callable[[float], None] | None = None,
    overwrite: bool = False,
) -> Path:
    """Train and evaluate one cell; return its completed result folder ``out_dir/<cell id>``.

    ``status`` receives short phase descriptions and ``progress`` the fraction done (for progress
    bars). A folder completed meanwhile by another runner is kept (first wins) unless ``overwrite``.
    """
    say = status or (lambda _msg: None)
    advance = progress or (lambda _frac: None)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    say("reading dataset")
    data = load_category(cfg.dataset, cfg.category, Path(cfg.data_root) if cfg.data_root else None)
    final = out_dir / cell_id(cfg, data.manifest_sha256())
    work = Path(tempfile.mkdtemp(dir=out_dir, prefix=f".{final.name}.partial-"))
    work.chmod(0o755)  # mkdtemp makes it private; a shared store must stay readable
    try:
        with governed_threads(cfg.threads) as governor:
            record = _run(cfg, data, final.name, work, say, advance)
            record["provenance"]["threads"] = governor.usage()
        _atomic_write_text(work / "result.json", json.dumps(record, indent=1, default=_json_default))
    except BaseException as exc:
        failed = out_dir / f"{final.name}.failed"
        (work / "error.txt").write_text(f"{type(exc).__name__}: {exc}\n")
        shutil.rmtree(failed, ignore_errors=True)
        os.replace(work, failed)
        raise
    if final.exists():
        if not overwrite:
            shutil.rmtree(work)
            return final
        old = Path(tempfile.mkdtemp(dir=out_dir, prefix=f".{final.name}.old-"))
        os.replace(final, old / "cell")
        shutil.rmtree(old)
    os.replace(work, final)
    return final


def _json_default(obj: object) -> object:
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot serialise {type(obj).__name__}")


def _run(
    cfg: RunConfig,
    data: CategoryData,
    name: str,
    work: Path,
    say: Callable[[str], None],
    advance: Callable[[float], None],
) -> dict:
    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    spec = load_builtin_methods().get(cfg.method)
    if cfg.malloc_tuning:
        tune_malloc()
    seed_everything(cfg.seed)

    known, test = known_and_test(cfg, data)
    if not any(s.is_anomalous for s in test) or all(s.is_anomalous for s in test):
        raise DatasetError(
            f"the reduced test set of {data.dataset}/{data.category} needs both normal and anomalous images"
        )

    say("loading backbone")
    extractor = create_backbone(
        cfg.backbone, Path(cfg.backbone_weights) if cfg.backbone_weights else None, cfg.random_weights
    )
    device = resolve_device(cfg.device)
    extractor.to(device)
    dtype = {"float32": torch.float32, "float16": torch.float16}[cfg.feature_dtype]
    cache = FeatureCache(
        extractor, cfg.input_size, cache_dir() / "features" if cfg.feature_cache else None, dtype
    )

    say("computing features")
    start = time.perf_counter()
    normal_feats = cache.features([s.image_path for s in data.train])
    anomaly_feats = cache.features([s.image_path for s in known]) if known else None
    test_feats = cache.features([s.image_path for s in test])
    timings["backbone_cached_images"] = time.perf_counter() - start

    uses_anomalies = spec.uses_anomalies and bool(known)
    start = time.perf_counter()
    size = cfg.input_size
    normal_images = (
        np.stack([cache.load_resized(s.image_path) for s in data.train])
        if uses_anomalies
        else np.zeros((0, size, size, 3), np.uint8)
    )
    anomaly_masks_real = [load_mask(s, size) for s in known] if uses_anomalies else []
    anomaly_images = (
        np.stack([cache.load_resized(s.image_path) for s in known])
        if uses_anomalies
        else np.zeros((0, size, size, 3), np.uint8)
    )
    anomaly_masks = (
        np.stack([m for m, _ in anomaly_masks_real])
        if uses_anomalies
        else np.zeros((0, size, size), np.uint8)
    )
    test_masks = _test_masks(test, size, data.has_pixel_masks)
    timings["load_images_masks"] = time.perf_counter() - start
    labels = np.array([s.label for s in test])

    detector = spec.build(cfg, [tuple(f.shape[1:]) for f in normal_feats], device)
    history: list[dict] = []
    last: dict = {}
    eval_time = {"loglik_and_maps": 0.0, "metrics": 0.0}

    def evaluate(meta: int) -> None:
        say(f"evaluating meta-epoch {meta}")
        t0 = time.perf_counter()
        scores = detector.score(test_feats, (size, size))
        t1 = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:  # e.g. the code-PRO undefined early on
            warnings.simplefilter("always")
            metrics = compute_metrics(
                labels, scores.image_scores, test_masks, scores.maps if test_masks is not None else None
            )
        eval_time["loglik_and_maps"] += t1 - t0
        eval_time["metrics"] += time.perf_counter() - t1
        entry = {"meta_epoch": meta, **metrics, "top_ties": scores.top_ties}
        if caught:
            entry["warnings"] = sorted({str(w.message) for w in caught})
        history.append(entry)
        last.update(scores=scores)

    total_sub_epochs = cfg.meta_epochs * cfg.sub_epochs

    def on_sub_epoch(meta: int, sub: int) -> None:
        say(f"training meta-epoch {meta + 1}/{cfg.meta_epochs}")
        advance((meta * cfg.sub_epochs + sub + 1) / total_sub_epochs)

    training = TrainingData(
        normal_features=normal_feats,
        normal_images=normal_images,
        anomaly_features=anomaly_feats if uses_anomalies else [f[:0] for f in normal_feats],
        anomaly_images=anomaly_images,
        anomaly_masks=anomaly_masks,
        kind=data.kind,
        compute_features=cache.compute,
    )
    start = time.perf_counter()
    detector.fit(training, after_meta_epoch=evaluate, on_sub_epoch=on_sub_epoch)
    timings["fit_total"] = time.perf_counter() - start
    timings.update({k: round(v, 4) for k, v in detector.timings_.items()})
    timings["evaluation_loglik_and_maps"] = eval_time["loglik_and_maps"]
    timings["evaluation_metrics"] = eval_time["metrics"]
    timings["total"] = time.perf_counter() - t_start

    say("writing results")
    scores = last["scores"]
    pd.DataFrame(
        {
            "path": [
                str(s.image_path.relative_to(data.root))
                if s.image_path.is_relative_to(data.root)
                else str(s.image_path)
                for s in test
            ],
            "label": labels,
            "defect_type": [s.defect_type for s in test],
            "score": scores.image_scores,
        }
    ).to_csv(work / "scores.csv", index=False)
    artifacts = {"scores": "scores.csv"}
    if scores.level_ll is not None:
        np.savez_compressed(
            work / "loglik_samples.npz",
            **_loglik_samples(scores.level_ll, test_masks, labels, cfg.loglik_samples, cfg.seed),
        )
        artifacts["loglik_samples"] = "loglik_samples.npz"
    np.savez_compressed(
        work / "map_samples.npz", **_map_samples(test, scores, test_masks, cache, cfg.map_samples)
    )
    artifacts["map_samples"] = "map_samples.npz"

    return {
        "schema_version": SCHEMA_VERSION,
        "cell_id": name,
        "status": "complete",
        "config": cfg.to_dict(),
        "config_hash": cfg.result_hash(),
        "method": spec.describe(),
        "backbone": extractor.describe(),
        "dataset": {
            "name": data.dataset,
            "category": data.category,
            "root": str(data.root),
            "kind": data.kind,
            "has_pixel_masks": data.has_pixel_masks,
            "manifest_sha256": data.manifest_sha256(),
            "counts": {
                "train": len(data.train),
                "test_full": len(data.test),
                "test_reduced": len(test),
                "test_anomalous": int(labels.sum()),
                "known_anomalies": len(known),
            },
        },
        "known_anomalies": {
            "rule": cfg.anomaly_selection,
            "defect_type": cfg.anomaly_defect_type,
            "train_types": _type_list(cfg.train_types),
            "test_types": _type_list(cfg.test_types),
            "files": [str(s.image_path.relative_to(data.root)) for s in known],
            "used_in_training": uses_anomalies,
            "without_pixel_mask": sum(1 for _, real in anomaly_masks_real if not real),
            "mask_free_rule": "an anomalous image without a pixel mask counts as anomalous everywhere (whole-image mask)",
        },
        "metrics": {
            "variants": {k: METRIC_VARIANTS[k] for k in METRIC_VARIANTS},
            "pixel_metrics_at": f"{size}x{size}",
            "per_epoch": history,
            "last_epoch": {k: history[-1][k] for k in METRIC_NAMES if k in history[-1]}
            | {"meta_epoch": history[-1]["meta_epoch"]},
            "best_per_metric_paper_compatible": _best_per_metric(history),
        },
        "counters": dict(detector.counters_),
        "feature_cache": {
            "enabled": cfg.feature_cache,
            "hits": cache.hits,
            "misses": cache.misses,
            "dtype": cfg.feature_dtype,
        },
        "timing_seconds": {k: round(v, 4) for k, v in timings.items()},
        "device": str(device),
        "provenance": environment(),
        "artifacts": artifacts,
    }


def _best_per_metric(history: list[dict]) -> dict:
    """Best epoch per metric, each chosen on the test set separately (the released code's reporting)."""
    best = {}
    for name in METRIC_NAMES:
        values = [(h[name], h["meta_epoch"]) for h in history if name in h and not np.isnan(h[name])]
        if values:
            value, epoch = max(values, key=lambda v: v[0])
            best[name] = {"value": value, "meta_epoch": epoch}
    return best
