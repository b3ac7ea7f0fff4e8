"""Run one cell (method × dataset × category × seed) end to end and write its self-describing folder.

A cell is a pipeline of named stages: ``load_inputs`` (known anomalies, reduced test set, masks) →
``compute_features`` (frozen backbone, cached) → ``fit_and_evaluate`` (train; metrics after every
evaluated meta-epoch) → ``write_artifacts`` (scores, samples) → the record. The store
(``bgad.bench.store.cell_folder``) writes the folder under a temporary name and renames it when complete;
a failed run becomes ``<name>.failed`` with its log and traceback, so nothing half-written ever
looks like a result.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import random
import time
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

from bgad.backbones import FeatureExtractor, create_backbone
from bgad.bench.allocator import tune_malloc
from bgad.bench.cell_log import CellLog, log_to_file
from bgad.bench.config import ConfigError, RunConfig
from bgad.bench.method_registry import METHODS
from bgad.bench.provenance import environment
from bgad.bench.saved_model import save_model
from bgad.bench.store import cell_folder, cell_id, write_record
from bgad.data.content import content_sha256
from bgad.data.datasets import load_category
from bgad.data.images import DatasetError, read_mask
from bgad.data.samples import MIN_TEST_IMAGES, CategoryData, Sample
from bgad.features import FeatureCache, resize_mask
from bgad.fileio import StorageError, storage_error
from bgad.flow_detector import Detector, TrainingData, downsample_masks
from bgad.metrics import (
    DIVERGED,
    DIVERGED_LOSS,
    FLAG_TEXT,
    METRIC_LABELS,
    METRIC_NAMES,
    METRIC_VARIANTS,
    TIE_SPREAD,
    TIED,
    compute_metrics,
    tie_flags,
)
from bgad.paths import cache_dir
from bgad.scoring import Scores
from bgad.selection import select_known_anomalies
from bgad.threads import governed_threads

#: 2: an evaluation (and ``last_epoch``) may carry ``flags`` ({metric: "diverged" | "tied"}, its value NaN)
#: and a best-epoch entry ``flag``; records without them (version 1) are unflagged.
SCHEMA_VERSION = 2
#: File-system errors a user fixes by giving another folder (or freeing space), not by retrying.
WRITE_ERRORS = {errno.ENOSPC, errno.EROFS, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.ENOTDIR}


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
    """``auto`` → the GPU when one is visible, else the CPU; a device this machine lacks is a clear error.

    Called before anything runs (the grid's preflight, ``predict``), so a GPU that is not there is one
    line naming ``--device`` instead of a torch traceback from every cell.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        device = None
    if device is None or device.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"--device {name!r} is not a device: use auto, cpu, cuda, cuda:N or mps")
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if device.type == "cuda" and (device.index or 0) >= count:
        seen = f"{count} CUDA device(s), cuda:0 to cuda:{count - 1}" if count else "no CUDA device"
        raise ConfigError(f"--device {name!r}: torch sees {seen} on this machine; use --device cpu or auto")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"--device {name!r}: torch sees no Apple MPS device here; use --device cpu or auto")
    return device


def load_mask(sample: Sample, size: int) -> tuple[np.ndarray, bool]:
    """The sample's mask at size×size and whether it is a real pixel mask.

    An anomalous image without a pixel mask counts as anomalous everywhere (docs/method.md §3); the
    result records how many known anomalies were treated so.
    """
    if not sample.is_anomalous:
        return np.zeros((size, size), np.uint8), True
    if sample.mask_path is None:
        return np.ones((size, size), np.uint8), False
    with Image.open(sample.image_path) as image:  # header only: the size to check the mask against
        width, height = image.size
    return resize_mask(read_mask(sample.mask_path, expected_size=(width, height)), size), True


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


@dataclass
class CellInputs:
    """Stage 1's output: the category, the known anomalies, the reduced test set and its labels."""

    data: CategoryData
    known: list[Sample]
    test: list[Sample]
    labels: np.ndarray
    test_masks: np.ndarray | None


@dataclass
class CellFeatures:
    """Stage 2's output: the backbone, its feature cache, and features per level of each image set."""

    extractor: FeatureExtractor
    cache: FeatureCache
    normal: list[torch.Tensor]
    anomalies: list[torch.Tensor] | None
    test: list[torch.Tensor]


@dataclass
class FitResult:
    """Stage 3's output: the trained detector, metrics of each evaluated meta-epoch, last scores."""

    detector: Detector
    history: list[dict]
    scores: Scores
    timings: dict[str, float] = field(default_factory=dict)


def cell_label(cfg: RunConfig) -> str:
    return f"{cfg.dataset}/{cfg.category} {cfg.method} seed {cfg.seed}"


def load_inputs(cfg: RunConfig, data: CategoryData, log: CellLog | None = None) -> CellInputs:
    """Stage 1: the cell's known anomalies, reduced test set, labels and test masks."""
    if cfg.category_kind != "auto":
        data = dataclasses.replace(data, kind=cfg.category_kind)
    known, test = known_and_test(cfg, data)
    if not any(s.is_anomalous for s in test) or all(s.is_anomalous for s in test):
        raise DatasetError(
            f"the reduced test set of {data.dataset}/{data.category} needs both normal and anomalous images"
        )
    labels = np.array([s.label for s in test])
    masks = np.stack([load_mask(s, cfg.input_size)[0] for s in test]) if data.has_pixel_masks else None
    small = {"normal": int((labels == 0).sum()), "anomalous": int(labels.sum())}
    for what, count in small.items():
        if count < MIN_TEST_IMAGES and log is not None:
            log.warning(
                f"only {count} {what} test image(s) in {data.dataset}/{data.category}: one image moves the AUROC "
                f"by {1 / max(count, 1):.2f} or more; read its metrics as rough"
            )
    if not data.has_pixel_masks and log is not None:
        log.info(f"{data.dataset}/{data.category} has no pixel masks: image-level metrics only")
    return CellInputs(data, known, test, labels, masks)


def frozen_backbone(cfg: RunConfig) -> FeatureExtractor:
    """The cell's frozen feature extractor: its backbone, with its weights file or random weights."""
    weights = Path(cfg.backbone_weights) if cfg.backbone_weights else None
    return create_backbone(cfg.backbone, weights_path=weights, random_weights=cfg.random_weights)


def compute_features(cfg: RunConfig, inputs: CellInputs, device: torch.device) -> CellFeatures:
    """Stage 2: the method's inputs of the training, known-anomaly and test images: the frozen
    backbone's features, or the resized images for a method that fine-tunes its own backbone (the frozen
    backbone is still built: the record names the weights both start from)."""
    extractor = frozen_backbone(cfg)
    extractor.to(device)
    dtype = {"float32": torch.float32, "float16": torch.float16}[cfg.feature_dtype]
    root = cache_dir() / "features" if cfg.feature_cache else None
    cache = FeatureCache(extractor, cfg.input_size, root, dtype)
    what = cfg.spec.inputs
    normal = cache.read([s.image_path for s in inputs.data.train], what)
    anomalies = cache.read([s.image_path for s in inputs.known], what) if inputs.known else None
    test = cache.read([s.image_path for s in inputs.test], what)
    return CellFeatures(extractor, cache, normal, anomalies, test)


def training_data(
    cfg: RunConfig, uses_anomalies: bool, inputs: CellInputs, feats: CellFeatures
) -> TrainingData:
    """What ``fit`` needs: features (or images), and the images and masks RACP pastes from and onto
    (only a feature method pastes RACP anomalies: an image method gets none)."""
    size = cfg.input_size
    no_images = np.zeros((0, size, size, 3), np.uint8)
    if not uses_anomalies or cfg.spec.inputs == "images":
        return TrainingData(
            feats.normal,
            no_images,
            feats.anomalies if uses_anomalies else [f[:0] for f in feats.normal],
            no_images,
            no_images[..., 0],
            inputs.data.kind,
            feats.cache.compute,
        )
    load = feats.cache.load_resized
    return TrainingData(
        normal_features=feats.normal,
        normal_images=np.stack([load(s.image_path) for s in inputs.data.train]),
        anomaly_features=feats.anomalies,
        anomaly_images=np.stack([load(s.image_path) for s in inputs.known]),
        anomaly_masks=np.stack([load_mask(s, size)[0] for s in inputs.known]),
        kind=inputs.data.kind,
        compute_features=feats.cache.compute,
    )


def fit_and_evaluate(
    cfg: RunConfig,
    detector: Detector,
    training: TrainingData,
    inputs: CellInputs,
    test_feats: list[torch.Tensor],
    log: CellLog,
    advance: Callable[[float], None],
) -> FitResult:
    """Stage 3: train, evaluating after every ``eval_every`` meta-epochs (and the last)."""
    history: list[dict] = []
    last: dict = {}
    times = {"evaluation_loglik_and_maps": 0.0, "evaluation_metrics": 0.0}
    size = (cfg.input_size, cfg.input_size)
    started = time.perf_counter()
    meta_epochs = getattr(cfg, cfg.spec.rounds) if cfg.spec.iterative else 1
    word = cfg.spec.round_word

    def evaluate(meta: int) -> None:
        log.phase(f"evaluating {word} {meta + 1}/{meta_epochs}")
        t0 = time.perf_counter()
        scores = detector.score(test_feats, size)
        t1 = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:  # e.g. the code-PRO undefined early on
            warnings.simplefilter("always")
            maps = scores.maps if inputs.test_masks is not None else None
            metrics = compute_metrics(inputs.labels, scores.image_scores, inputs.test_masks, maps)
        times["evaluation_loglik_and_maps"] += t1 - t0
        times["evaluation_metrics"] += time.perf_counter() - t1
        summary = detector.training_summary() if hasattr(detector, "training_summary") else {}
        entry = {"meta_epoch": meta, **metrics, "top_ties": scores.top_ties, **summary}
        if caught:
            entry["warnings"] = sorted({str(w.message) for w in caught})
            for text in entry["warnings"]:
                log.warning(text)
        flag_evaluation(entry, tie_flags(scores.image_scores, maps), log, word)
        history.append(entry)
        last["scores"] = scores
        log.info(epoch_line(entry, meta_epochs, time.perf_counter() - started, word))

    def on_sub_epoch(meta: int, sub: int) -> None:
        per_meta = getattr(detector, "sub_epochs_", 1)
        if sub == 0:
            log.phase(_training_line(cfg, meta, meta_epochs, per_meta))
        advance((meta * per_meta + sub + 1) / (meta_epochs * per_meta))

    detector.fit(training, after_meta_epoch=evaluate, on_sub_epoch=on_sub_epoch)
    times["fit_total"] = time.perf_counter() - started
    return FitResult(detector, history, last["scores"], times)


def _training_line(cfg: RunConfig, meta: int, meta_epochs: int, per_meta: int) -> str:
    """The log line of a meta-epoch; it says why BGAD's first meta-epochs print NFAD-like numbers (phase 1
    trains on normal images only, by design)."""
    if cfg.spec.rounds == "epochs":
        return f"training epoch {meta + 1}/{meta_epochs} ({cfg.steps_per_epoch} steps of {cfg.batch_size} images)"
    line = f"training meta-epoch {meta + 1}/{meta_epochs} ({per_meta} pass(es) over the normal images)"
    phase1 = getattr(cfg, "phase1_epochs", 0)
    if cfg.spec.uses_anomalies and meta < phase1:
        line += f"; phase 1: normal images only, as NFAD (known anomalies from meta-epoch {phase1 + 1})"
    return line


def flag_evaluation(entry: dict, ties: dict[str, str], log: CellLog, word: str = "meta-epoch") -> None:
    """Flag the metrics of one evaluation that mean nothing; their values become NaN, with a warning.

    Why: a diverged flow scores every image alike and a tie ranks rounding errors, yet both give
    numbers (an image AUROC of 0.500, or 0.380) that would otherwise be reported, averaged, drawn
    and even chosen as the best epoch without a word. A divergence flags every metric (its cause is
    the training, not the scores); otherwise only the metrics whose scores are tied.
    """
    present = [k for k in METRIC_NAMES if k in entry]
    loss = entry.get("train_loss")
    if loss is not None and not (np.isfinite(loss) and loss <= DIVERGED_LOSS):
        flags = dict.fromkeys(present, DIVERGED)
        log.warning(
            f"training diverged at {word} {entry['meta_epoch'] + 1}: mean loss {loss:.3g} (limit "
            f"{DIVERGED_LOSS:g}); every metric of this evaluation is flagged {DIVERGED!r}, not a number. "
            "Try a lower --set lr=..."
        )
    else:
        flags = {k: v for k, v in ties.items() if k in present}
        if flags:
            log.warning(
                f"tied scores at {word} {entry['meta_epoch'] + 1} (spread within {TIE_SPREAD:g} of their "
                f"magnitude): {', '.join(METRIC_LABELS[k] for k in flags)} undefined, flagged {TIED!r}"
            )
    if flags:
        entry.update(dict.fromkeys(flags, float("nan")), flags=flags)


def epoch_line(entry: dict, meta_epochs: int, elapsed: float, word: str = "meta-epoch") -> str:
    """One meta-epoch as a plain line: training loss and ℓ per level, then the metrics (or their flag)."""
    head = f"{word} {entry['meta_epoch'] + 1}/{meta_epochs}:"
    parts: list[str] = []
    if "train_loss" in entry:
        levels = "/".join(f"{x:.2f}" for x in entry.get("train_ll", []))
        parts.append(f"loss {entry['train_loss']:.3f}" + (f", train ℓ per level {levels}" if levels else ""))
    flags = entry.get("flags", {})
    parts += [
        f"{label} {FLAG_TEXT[flags[k]]}" if k in flags else f"{label} {entry[k]:.3f}"
        for k, label in METRIC_LABELS.items()
        if k in flags or (k in entry and entry[k] == entry[k])
    ]
    return f"{head} {', '.join(parts)} ({elapsed:.0f} s)"


def write_artifacts(
    cfg: RunConfig, work: Path, inputs: CellInputs, scores: Scores, cache: FeatureCache
) -> dict:
    """Stage 4: per-image scores, log-likelihood samples and a few maps beside the record."""
    root = inputs.data.root
    paths = [
        str(s.image_path.relative_to(root)) if s.image_path.is_relative_to(root) else str(s.image_path)
        for s in inputs.test
    ]
    frame = pd.DataFrame(
        {
            "path": paths,
            "label": inputs.labels,
            "defect_type": [s.defect_type for s in inputs.test],
            "score": scores.image_scores,
        }
    )
    frame.to_csv(work / "scores.csv", index=False)
    artifacts = {"scores": "scores.csv"}
    if scores.level_ll is not None:
        samples = _loglik_samples(
            scores.level_ll, inputs.test_masks, inputs.labels, cfg.loglik_samples, cfg.seed
        )
        np.savez_compressed(work / "loglik_samples.npz", **samples)
        artifacts["loglik_samples"] = "loglik_samples.npz"
    maps = _map_samples(inputs.test, scores, inputs.test_masks, cache, cfg.map_samples)
    np.savez_compressed(work / "map_samples.npz", **maps)
    artifacts["map_samples"] = "map_samples.npz"
    return artifacts


def run_cell(
    cfg: RunConfig,
    out_dir: Path,
    status: Callable[[str], None] | None = None,
    progress: Callable[[float], None] | None = None,
    overwrite: bool = False,
) -> Path:
    """Train and evaluate one cell; return its completed result folder ``out_dir/<cell id>``.

    ``status`` receives short phase descriptions and ``progress`` the fraction done (for progress
    bars); every phase and meta-epoch is also a line of the cell's ``run.log`` and of the
    ``bgad.cell`` logger. A folder completed meanwhile by another runner is kept (first wins) unless
    ``overwrite``. A failed cell leaves ``<cell id>.failed/`` with ``run.log`` and the full
    traceback in ``error.txt``.
    """
    log = CellLog(cell_label(cfg), status)
    log.phase("reading dataset")
    data = load_category(cfg.dataset, cfg.category, Path(cfg.data_root) if cfg.data_root else None)
    digest = content_sha256(data)  # file list and bytes: a changed image is another cell
    name = cell_id(cfg, digest)
    out_dir = Path(out_dir)
    try:
        with cell_folder(out_dir, name, overwrite) as work, log_to_file(work / "run.log", log.label):
            try:
                log.info(f"cell {name}")
                with governed_threads(cfg.threads) as governor:
                    record = _run(cfg, data, name, work, log, progress or (lambda _frac: None))
                    record["provenance"]["threads"] = governor.usage()
                write_record(work, record)
                log.info(f"done in {record['timing_seconds']['total']:.0f} s")
            except BaseException as exc:
                log.warning(f"failed: {type(exc).__name__}: {exc}")
                with contextlib.suppress(OSError):  # a full disk may refuse this too
                    (work / "error.txt").write_text("".join(traceback.format_exception(exc)))
                raise
    except OSError as exc:
        if exc.errno not in WRITE_ERRORS or isinstance(exc, StorageError):
            raise
        hint = f"choose another results folder with --results DIR (this one: {out_dir})"
        raise storage_error(Path(exc.filename or out_dir), exc, hint) from exc
    return out_dir / name


def _run(
    cfg: RunConfig, data: CategoryData, name: str, work: Path, log: CellLog, advance: Callable[[float], None]
) -> dict:
    """The stages of one cell, timed; returns its record."""
    t_start = time.perf_counter()
    spec = METHODS.get(cfg.method)
    if cfg.malloc_tuning:
        tune_malloc()
    seed_everything(cfg.seed)
    inputs = load_inputs(cfg, data, log)
    device = resolve_device(cfg.device)
    log.phase("computing features")
    start = time.perf_counter()
    feats = compute_features(cfg, inputs, device)
    timings = {"backbone_cached_images": time.perf_counter() - start}
    uses_anomalies = spec.uses_anomalies and bool(inputs.known)
    start = time.perf_counter()
    training = training_data(cfg, uses_anomalies, inputs, feats)
    timings["load_images_masks"] = time.perf_counter() - start
    detector = spec.build(cfg, device)
    fit = fit_and_evaluate(cfg, detector, training, inputs, feats.test, log, advance)
    timings.update(fit.timings)
    timings.update({k: round(v, 4) for k, v in detector.timings_.items()})
    log.phase("writing results")
    artifacts = write_artifacts(cfg, work, inputs, fit.scores, feats.cache)
    if cfg.save_model:
        shapes = [tuple(f.shape[1:]) for f in feats.normal]
        save_model(work, cfg, detector, feats.extractor, shapes, fit.scores, inputs.labels)
        artifacts["model"] = "model/"
    timings["total"] = time.perf_counter() - t_start
    return _record(cfg, spec, name, inputs, feats, fit, uses_anomalies, timings, artifacts, device)


def _record(
    cfg,
    spec,
    name,
    inputs: CellInputs,
    feats: CellFeatures,
    fit: FitResult,
    uses_anomalies: bool,
    timings: dict,
    artifacts: dict,
    device,
) -> dict:
    """The self-describing record (``result.json``) of a finished cell."""
    history = fit.history
    return {
        "schema_version": SCHEMA_VERSION,
        "cell_id": name,
        "status": "complete",
        "config": cfg.to_dict(),
        "config_hash": cfg.result_hash(),
        "method": spec.describe(),
        "backbone": feats.extractor.describe(),
        "dataset": _dataset_section(inputs),
        "known_anomalies": _known_section(cfg, inputs, uses_anomalies),
        "metrics": {
            "variants": {k: METRIC_VARIANTS[k] for k in METRIC_VARIANTS},
            "pixel_metrics_at": f"{cfg.input_size}x{cfg.input_size}",
            "per_epoch": history,
            "last_epoch": {k: history[-1][k] for k in (*METRIC_NAMES, "flags") if k in history[-1]}
            | {"meta_epoch": history[-1]["meta_epoch"]},
            "best_per_metric_paper_compatible": _best_per_metric(history),
        },
        "counters": dict(fit.detector.counters_),
        "feature_cache": {
            "enabled": cfg.feature_cache,
            "hits": feats.cache.hits,
            "misses": feats.cache.misses,
            "dtype": cfg.feature_dtype,
            "disabled": feats.cache.disabled,
        },
        "timing_seconds": {k: round(v, 4) for k, v in timings.items()},
        "device": str(device),
        "provenance": environment(),
        "artifacts": artifacts,
    }


def _dataset_section(inputs: CellInputs) -> dict:
    data = inputs.data
    return {
        "name": data.dataset,
        "category": data.category,
        "root": str(data.root),
        "kind": data.kind,
        "has_pixel_masks": data.has_pixel_masks,
        "manifest_sha256": data.manifest_sha256(),
        "content_sha256": content_sha256(data),
        "counts": {
            "train": len(data.train),
            "test_full": len(data.test),
            "test_reduced": len(inputs.test),
            "test_anomalous": int(inputs.labels.sum()),
            "known_anomalies": len(inputs.known),
        },
    }


def _known_section(cfg: RunConfig, inputs: CellInputs, uses_anomalies: bool) -> dict:
    return {
        "rule": cfg.anomaly_selection,
        "defect_type": cfg.anomaly_defect_type,
        "train_types": _type_list(cfg.train_types),
        "test_types": _type_list(cfg.test_types),
        "files": [str(s.image_path.relative_to(inputs.data.root)) for s in inputs.known],
        "used_in_training": uses_anomalies,
        "without_pixel_mask": sum(1 for s in inputs.known if s.mask_path is None) if uses_anomalies else 0,
        "mask_free_rule": "an anomalous image without a pixel mask counts as anomalous everywhere (whole-image mask)",
    }


def _best_per_metric(history: list[dict]) -> dict:
    """Best epoch per metric, each chosen on the test set separately (the released code's reporting).

    A flagged evaluation (NaN) is never chosen; when every evaluation of a metric is flagged, its
    entry keeps the last one's flag, so tables say why there is no value.
    """
    best = {}
    for name in METRIC_NAMES:
        values = [(h[name], h["meta_epoch"]) for h in history if name in h and not np.isnan(h[name])]
        flag = history[-1].get("flags", {}).get(name)
        if values:
            value, epoch = max(values, key=lambda v: v[0])
            best[name] = {"value": value, "meta_epoch": epoch}
        elif flag:
            best[name] = {"value": float("nan"), "meta_epoch": history[-1]["meta_epoch"], "flag": flag}
    return best
