"""An emulation of the released BGAD/CFLOW-AD code's way of working, for the speed benchmark.

Same math as ``bgad.bench.cell.run_cell`` (same flow parameters and initialisation, batches, learning rates,
losses, RACP samples and metric definitions), but organised the way the authors' code is:

* the frozen backbone (the plain timm model: NCHW, batch norms unfolded) is recomputed for every
  training image in every epoch: each training batch is read from disk, resized and passed through
  the backbone (RACP images are made per epoch and go through the backbone inside their batch, as in
  the released dataset's ``__getitem__``). The training itself is the flow detector's own
  (``FlowDetector.fit``: schedule, phases, pools, batches, steps), fed with ``BatchFeatures``, which
  compute a batch's features when the step takes them, where ours are cached;
* the flows take the 128-channel positional code concatenated to every fiber
  (``released_config`` sets ``shared_positions=False``), as the released subnets do;
* evaluation is batch-1: every test image is read, resized, passed through the backbone and the
  flows on its own (its mask read with it); the whole-test-set normalisation is the same;
* the encoder is the one BGAD's ``train()`` builds: ``timm.create_model(..., features_only=True,
  out_indices=...)``, which keeps every stage of the network; for B6 the two stride-32 stages after
  the last used level run on every image and their output is thrown away (``ReleasedEncoder``);
* the metrics are sklearn's ``roc_auc_score`` on the image scores and on all pixels flattened, and
  BGAD's own ``calculate_pro_metric`` loop (``released_bgad_pro``): for each of its 1000 thresholds,
  binarise all maps, label the connected components of every mask again with their region
  properties, and average the per-region overlap. It computes the definition of
  ``bgad.metrics.pro_auc_paper``, so it is also the PRO benchmark's value check.

With the same seed the metrics equal ours up to floating-point rounding: the backbone's result for
one image changes in the last bits with the batch and memory layout it is computed in, and the code's
share of the first coupling layer is summed in another order.
"""

from __future__ import annotations

import dataclasses
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import timm
import torch
from scipy import ndimage
from sklearn.metrics import auc, roc_auc_score

from benchmarks.speed_common import evenly_spaced, sync
from bgad.backbones import BACKBONES, FeatureExtractor
from bgad.bench.cell import known_and_test, load_mask, resolve_device, seed_everything
from bgad.bench.config import RunConfig
from bgad.bench.method_registry import METHODS
from bgad.data.datasets import load_category
from bgad.data.samples import Sample
from bgad.features import FeatureCache, to_tensor
from bgad.flow_detector import FlowDetector, TrainingData
from bgad.scoring import Scores, anomaly_maps

_STRUCTURE_8 = np.ones((3, 3), dtype=bool)


# --------------------------------------------------------------------------------------------------
# the released PRO: one connected-component labelling per image per threshold


def threshold_steps(max_step: int, n_timed: int | None) -> np.ndarray:
    """All ``max_step`` threshold steps, or ``n_timed`` of them spread evenly (both ends included)."""
    if n_timed is not None and n_timed < max_step:
        return evenly_spaced(max_step, n_timed)
    return np.arange(max_step)


def released_bgad_pro(
    masks: np.ndarray,
    maps: np.ndarray,
    max_step: int = 1000,
    expect_fpr: float = 0.3,
    n_timed: int | None = None,
) -> dict:
    """BGAD's own ``calculate_pro_metric`` (utils/utils.py, DFR-derived), the PRO its released code runs.

    Thresholds ``max - step·δ`` for step = 0…``max_step``-1; at each, the maps binarised with two
    masked assignments; every mask labelled again (8-connected) with its region properties; each
    region's overlap = predicted pixels inside its hole-filled bounding-box crop / its area (float32
    casts); a per-image IoU (two more full-image logical operations); the negative mask recomputed
    for the FPR. Kept thresholds have FPR ≤ ``expect_fpr``; their FPRs are min-max rescaled and
    ``sklearn.metrics.auc`` is returned.
    scipy stand-ins for skimage's ``label``/``regionprops`` (``filled_image`` = ``binary_fill_holes``
    with the 3×3 structure, as skimage). The value is ``bgad.metrics.pro_auc_paper``'s.

    ``n_timed``: evaluate only that many thresholds, evenly spaced over the grid, and extrapolate the
    time linearly to all of them (``value`` is then None, ``extrapolated`` True).
    """
    gt = np.asarray(masks).astype(bool)
    scores = np.asarray(maps, dtype=np.float64)
    max_th, min_th = scores.max(), scores.min()
    delta = (max_th - min_th) / max_step
    steps = threshold_steps(max_step, n_timed)
    binary = np.zeros_like(scores, dtype=bool)
    pros, fprs = [], []
    start = time.perf_counter()
    for step in steps:
        threshold = max_th - step * delta
        binary[scores <= threshold] = 0
        binary[scores > threshold] = 1
        overlaps, ious = [], []
        for pred, mask in zip(binary, gt, strict=True):
            labels, _ = ndimage.label(mask, structure=_STRUCTURE_8)
            for r, box in enumerate(ndimage.find_objects(labels), start=1):
                region = labels[box] == r
                filled = ndimage.binary_fill_holes(region, structure=_STRUCTURE_8)
                overlaps.append(np.logical_and(pred[box], filled).astype(np.float32).sum() / region.sum())
            intersection = np.logical_and(pred, mask).astype(np.float32).sum()
            union = np.logical_or(pred, mask).astype(np.float32).sum()
            if mask.any():
                ious.append(intersection / union)
        pros.append(np.array(overlaps).mean())
        _best_iou_input = np.array(ious).mean()  # the released loop keeps it for its best mIoU
        negatives = ~gt
        fprs.append(np.logical_and(negatives, binary).sum() / negatives.sum())
    seconds = time.perf_counter() - start
    out = {
        "n_thresholds": max_step,
        "n_timed": len(steps),
        "seconds_timed": seconds,
        "seconds": seconds * max_step / len(steps),
        "extrapolated": len(steps) < max_step,
        "value": None,
    }
    if not out["extrapolated"]:
        out["value"] = released_pro_value(pros, fprs, expect_fpr)
    return out


def released_pro_value(pros: list[float], fprs: list[float], expect_fpr: float) -> float:
    """The loop's value from its per-threshold PROs and FPRs: the thresholds with FPR ≤ ``expect_fpr``,
    their FPRs min-max rescaled, ``sklearn.metrics.auc`` (NaN where the released code fails)."""
    pros_a, fprs_a = np.array(pros), np.array(fprs)
    keep = fprs_a <= expect_fpr
    if keep.sum() < 2:  # sklearn's auc raises on fewer than 2 points
        return float("nan")
    kept = fprs_a[keep]
    with np.errstate(invalid="ignore", divide="ignore"):
        kept = (kept - kept.min()) / (kept.max() - kept.min())  # NaN where the released code gets 0/0
    return float(auc(kept, pros_a[keep])) if np.isfinite(kept).all() else float("nan")


def released_metrics(
    labels: np.ndarray,
    image_scores: np.ndarray,
    masks: np.ndarray | None,
    maps: np.ndarray | None,
    pro_timed: int | None = None,
) -> tuple[dict, dict]:
    """The released evaluation: sklearn AUROCs and BGAD's per-threshold PRO loop; (metrics, seconds)."""
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    metrics: dict = {"image_auroc": float(roc_auc_score(labels, image_scores))}
    if masks is not None and maps is not None and masks.any():
        metrics["pixel_auroc"] = float(roc_auc_score(masks.ravel().astype(bool), maps.ravel()))
        seconds["aurocs"] = time.perf_counter() - t0
        pro = released_bgad_pro(masks, maps, 1000, 0.3, pro_timed)
        metrics["pro_paper"] = pro["value"]
        seconds["pro"] = pro["seconds"]
        seconds["pro_measured"] = pro["seconds_timed"]
        seconds["pro_extrapolated"] = pro["extrapolated"]
    else:
        seconds["aurocs"] = time.perf_counter() - t0
    return metrics, seconds


# --------------------------------------------------------------------------------------------------
# training and scoring with the backbone in the loop


class ReleasedBackbone:
    """The released way's features: images read and resized when they are used and passed through the
    encoder every time, never cached. Keeps its own timings (reads, encoder, whole training batches)."""

    def __init__(self, extractor: FeatureExtractor, size: int, device: torch.device) -> None:
        self.extractor, self.size, self.device = extractor, size, device
        self.read_resized = FeatureCache(extractor, size).load_resized
        self.timings: dict[str, float] = defaultdict(float)
        self._last: tuple[object, object, list[torch.Tensor]] = (None, None, [])

    def read(self, item: Path | np.ndarray, key: str = "load_images") -> np.ndarray:
        """A training image: read and resized from its file (timed under ``key``), or a pasted RACP image."""
        if isinstance(item, np.ndarray):
            return item
        start = time.perf_counter()
        image = self.read_resized(item)
        self.timings[key] += time.perf_counter() - start
        return image

    def encode(self, images: list[np.ndarray], key: str = "backbone") -> list[torch.Tensor]:
        start = time.perf_counter()
        feats = self.extractor(to_tensor(images).to(self.device))
        sync(self.device)
        self.timings[key] += time.perf_counter() - start
        return feats

    def batch(self, items: list, idx: torch.Tensor) -> list[torch.Tensor]:
        """The per-level features of ``items[idx]``, computed once for all levels of the same batch."""
        last_items, last_idx, feats = self._last
        if last_items is items and last_idx is idx:
            return feats
        sync(self.device)  # the flows' queued work belongs to the flows' time, not the backbone's
        start = time.perf_counter()
        feats = self.encode([self.read(items[int(i)]) for i in idx])
        self.timings["batch_features"] += time.perf_counter() - start
        self._last = (items, idx, feats)
        return feats

    def levels(self, items: Sequence[Path | np.ndarray]) -> list[BatchFeatures]:
        return [BatchFeatures(self, list(items), level) for level in range(len(self.extractor.channels))]


class BatchFeatures:
    """One level's features of a pool of images, computed only when a training batch takes them.

    To the flow detector's training (``FlowDetector.fit``) this stands in for the cached (N,C,h,w)
    tensor of a level: it has its ``shape`` and length, ``[indices]`` gives a batch's features, and a
    pool is made of it as of tensors (``repeat`` of the known anomalies, ``torch.cat`` of the parts).
    So the released way trains with the flow detector's own loop, pool and steps; only where the
    features come from differs.
    """

    def __init__(self, source: ReleasedBackbone, items: list, level: int) -> None:
        self.source, self.items, self.level = source, items, level
        grid = source.size // source.extractor.strides[level]
        self.shape = torch.Size((len(items), source.extractor.channels[level], grid, grid))

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, idx: torch.Tensor) -> torch.Tensor:
        return self.source.batch(self.items, idx)[self.level]

    def repeat(self, times: int, *_: int) -> BatchFeatures:
        """Like ``Tensor.repeat`` along the images: the pool holds each known anomaly ``times`` times."""
        return BatchFeatures(self.source, self.items * times, self.level)

    @classmethod
    def __torch_function__(
        cls, func: Callable, types: tuple, args: tuple = (), kwargs: dict | None = None
    ) -> BatchFeatures:
        """``torch.cat`` of a level's parts (normals, known anomalies, RACP images) joins their images."""
        if func is not torch.cat:
            return NotImplemented
        parts = args[0]
        return BatchFeatures(parts[0].source, [i for p in parts for i in p.items], parts[0].level)


class ImageFiles:
    """Training images as the released dataset holds them: file paths, read when indexed (RACP's paste
    targets and anomalies), with the reads timed apart from the pasting."""

    def __init__(self, paths: list[Path], source: ReleasedBackbone) -> None:
        self.paths, self.source = paths, source

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> np.ndarray:
        return self.source.read(self.paths[i], key="load_images_racp")


def image_training_data(
    normals: list[Path], known: list[Sample], kind: str, source: ReleasedBackbone
) -> TrainingData:
    """What ``fit`` trains on, the released way: features and images read from the files when used,
    and the known anomalies' masks (``known``: empty for a method that does not use them)."""
    size = source.size
    masks = [load_mask(s, size)[0] for s in known]
    anomalies = [s.image_path for s in known]
    return TrainingData(
        normal_features=source.levels(normals),
        normal_images=ImageFiles(normals, source),
        anomaly_features=source.levels(anomalies),
        anomaly_images=ImageFiles(anomalies, source),
        anomaly_masks=np.stack(masks) if masks else np.zeros((0, size, size), np.uint8),
        kind=kind,
        compute_features=source.levels,
    )


def score_batch1(detector: FlowDetector, source: ReleasedBackbone, paths: list[Path]) -> Scores:
    """Test images one at a time: read, backbone, flows; then the whole-set anomaly maps."""
    timings = source.timings
    per_level: list[list[np.ndarray]] = [[] for _ in detector.flows_]
    for path in paths:
        image = source.read(path, key="eval_load_images")
        feats = [f.cpu() for f in source.encode([image], key="eval_backbone")]
        start = time.perf_counter()
        for level, ll in enumerate(detector.log_likelihoods(feats)):
            per_level[level].append(ll)
        timings["eval_flows"] += time.perf_counter() - start
    start = time.perf_counter()
    scores = anomaly_maps([np.concatenate(p) for p in per_level], (source.size, source.size))
    timings["eval_maps"] += time.perf_counter() - start
    return scores


def released_config(cfg: RunConfig) -> RunConfig:
    """The released code's flows: the positional code concatenated to every fiber, no input
    standardisation (the released code has none; ``BatchFeatures`` has no statistics to give it)."""
    if cfg.feature_norm != "none":
        raise ValueError(
            f"the released way has no input standardisation; got feature_norm={cfg.feature_norm}"
        )
    return cfg.with_overrides({"shared_positions": False}, source="released way")


def untrained(detector: FlowDetector, source: ReleasedBackbone) -> FlowDetector:
    """``detector`` with its flows as initialised for ``source``'s features: fitted for no meta-epoch."""
    return dataclasses.replace(detector, meta_epochs=0).fit(image_training_data([], [], "object", source))


class ReleasedEncoder(FeatureExtractor):
    """The released code's encoder: timm's ``features_only`` model, as BGAD's ``train()`` builds it.

    ``features_only`` keeps every stage of the network (ours prunes the stages after the last used
    level): for B6 the two stride-32 stages run on every image and their output is discarded. NCHW
    layout, batch norms unfolded; the weights are those ``FeatureExtractor`` loads (or draws) for the
    same preset, so the features equal ours up to rounding. Images are normalised by the preset's
    mean and std, as the released dataset's transform does.
    """

    def __init__(self, cfg: RunConfig) -> None:
        weights = Path(cfg.backbone_weights) if cfg.backbone_weights else None
        preset = BACKBONES.get(cfg.backbone)
        super().__init__(preset, weights, cfg.random_weights, channels_last=False, fold_bn=False)
        full = timm.create_model(
            preset.timm_name, pretrained=False, features_only=True, out_indices=preset.stage_indices
        )
        loaded = full.load_state_dict(self.model.state_dict(), strict=False)
        if loaded.unexpected_keys:
            raise RuntimeError(f"features_only {preset.timm_name} lacks {loaded.unexpected_keys[:3]} ...")
        self.model = full.eval().requires_grad_(False)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        return self.model((images - self.mean) / self.std)


def released_timings(detector: FlowDetector, source: ReleasedBackbone) -> dict[str, float]:
    """Every phase counted once: ``fit``'s ``flows_train`` clock also ran while the source computed
    each training batch's features, and its ``synthetic_anomalies`` clock while RACP read its images."""
    timings = {**detector.timings_, **source.timings}
    timings["flows_train"] = timings.get("flows_train", 0.0) - timings.pop("batch_features", 0.0)
    racp_reads = timings.pop("load_images_racp", 0.0)
    timings["synthetic_anomalies"] = timings.get("synthetic_anomalies", 0.0) - racp_reads
    timings["load_images"] = timings.get("load_images", 0.0) + racp_reads
    return timings


def run_released_way(cfg: RunConfig, pro_timed: int | None = None) -> dict:
    """One cell the released code's way; per-meta-epoch metrics, time breakdown and counters."""
    t_start = time.perf_counter()
    cfg = released_config(cfg)
    torch.set_num_threads(cfg.threads)
    seed_everything(cfg.seed)
    data = load_category(cfg.dataset, cfg.category, Path(cfg.data_root) if cfg.data_root else None)
    known, test = known_and_test(cfg, data)
    device = resolve_device(cfg.device)
    source = ReleasedBackbone(ReleasedEncoder(cfg).to(device), cfg.input_size, device)
    spec = METHODS.get(cfg.method)
    detector = spec.build(cfg, device)
    labels = np.array([s.label for s in test])
    history: list[dict] = []
    seconds: dict[str, float] = defaultdict(float)

    def evaluate(meta: int) -> None:
        scores = score_batch1(detector, source, [s.image_path for s in test])
        start = time.perf_counter()
        masks = np.stack([load_mask(s, cfg.input_size)[0] for s in test]) if data.has_pixel_masks else None
        source.timings["eval_load_images"] += time.perf_counter() - start
        metrics, metric_seconds = released_metrics(
            labels, scores.image_scores, masks, scores.maps if masks is not None else None, pro_timed
        )
        for key, value in metric_seconds.items():
            if key == "pro_extrapolated":
                seconds[key] = bool(value) or bool(seconds.get(key, False))
            else:
                seconds[key] += value
        history.append({"meta_epoch": meta, **metrics})

    known = known if spec.uses_anomalies else []
    detector.fit(image_training_data([s.image_path for s in data.train], known, data.kind, source), evaluate)
    wall = time.perf_counter() - t_start
    # The PRO loop is timed on a subset when asked: the wall clock then holds the measured part only.
    wall_extrapolated = wall - seconds.get("pro_measured", 0.0) + seconds.get("pro", 0.0)
    return {
        "history": history,
        "timings": released_timings(detector, source),
        "metric_seconds": dict(seconds),
        "counters": dict(detector.counters_),
        "wall_measured": wall,
        "wall": wall_extrapolated,
    }
