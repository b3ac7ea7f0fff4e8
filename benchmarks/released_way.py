"""An emulation of the released BGAD/CFLOW-AD code's way of working, for the speed benchmark.

Same math as ``bgad.bench.cell.run_cell`` (same flow parameters and initialisation, batches, learning rates,
losses, RACP samples and metric definitions), but organised the way the authors' code is:

* the frozen backbone (the plain timm model: NCHW, batch norms unfolded) is recomputed for every
  training image in every epoch: each training batch is read from disk, resized and passed through
  the backbone (RACP images are made per epoch and go through the backbone inside their batch, as in
  the released dataset's ``__getitem__``);
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

import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import timm
import torch
from scipy import ndimage
from sklearn.metrics import auc, roc_auc_score

from bgad.backbones import BACKBONES, FeatureExtractor
from bgad.bench.cell import known_and_test, load_mask, resolve_device, seed_everything
from bgad.bench.config import RunConfig
from bgad.bench.method_registry import METHODS
from bgad.data.datasets import load_category
from bgad.features import FeatureCache, to_tensor
from bgad.flow_detector import FlowDetector, downsample_masks, learning_rate
from bgad.scoring import Scores, anomaly_maps

_STRUCTURE_8 = np.ones((3, 3), dtype=bool)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# --------------------------------------------------------------------------------------------------
# the released PRO: one connected-component labelling per image per threshold


def evenly_spaced(n: int, k: int) -> np.ndarray:
    """At most ``k`` distinct indices spread evenly over ``range(n)`` (both ends included)."""
    return np.unique(np.linspace(0, n - 1, k).round().astype(int))


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


@dataclass
class ImageData:
    """What the released way trains on: image files (read per batch), known-anomaly masks."""

    normal_paths: list[Path]
    anomaly_paths: list[Path]
    anomaly_masks: np.ndarray  # (K,S,S) uint8
    kind: str
    load: Callable[[Path], np.ndarray]  # read + resize


class ReleasedWayDetector(FlowDetector):
    """``FlowDetector`` whose training batches and test images go through the backbone every time."""

    def __init__(self, cfg, spec, feature_shapes, device, extractor: FeatureExtractor) -> None:  # noqa: ANN001
        super().__init__(cfg, spec, feature_shapes, device)
        self.extractor = extractor

    def _backbone(self, images: list[np.ndarray]) -> list[torch.Tensor]:
        start = time.perf_counter()
        feats = self.extractor(to_tensor(images).to(self.device))
        _sync(self.device)
        self.timings_["backbone"] += time.perf_counter() - start
        return feats

    def _load(self, data: ImageData, item: Path | np.ndarray) -> np.ndarray:
        if isinstance(item, np.ndarray):
            return item
        start = time.perf_counter()
        image = data.load(item)
        self.timings_["load_images"] += time.perf_counter() - start
        return image

    def fit_images(self, data: ImageData, after_meta_epoch: Callable[[int], None] | None = None) -> None:
        cfg = self.cfg
        normal_masks = torch.zeros(
            (len(data.normal_paths), cfg.input_size, cfg.input_size), dtype=torch.uint8
        )
        for meta in range(cfg.meta_epochs):
            phase2 = meta >= cfg.phase1_epochs and self.spec.loss != "ml"
            for sub in range(cfg.sub_epochs):
                rng = np.random.default_rng([cfg.seed, meta, sub])
                items: list = list(data.normal_paths)
                masks = normal_masks
                if phase2 and self.spec.uses_anomalies and data.anomaly_paths:
                    items, masks = self._pool(data, normal_masks, rng)
                self._image_epoch(data, items, masks, meta, sub, phase2, rng)
            if after_meta_epoch and ((meta + 1) % cfg.eval_every == 0 or meta == cfg.meta_epochs - 1):
                after_meta_epoch(meta)

    def _pool(
        self, data: ImageData, normal_masks: torch.Tensor, rng: np.random.Generator
    ) -> tuple[list, torch.Tensor]:
        """Same pool as ``FlowDetector._with_anomalies``, but of images: normals, real anomalies
        ``repeats`` times, fresh RACP images (their paste targets read from disk when needed)."""
        cfg = self.cfg
        k = len(data.anomaly_paths)
        items: list = list(data.normal_paths) + list(data.anomaly_paths) * cfg.repeats
        masks = torch.cat([normal_masks, torch.from_numpy(data.anomaly_masks).repeat(cfg.repeats, 1, 1)])
        self.counters_["real_anomaly_samples"] += cfg.repeats * k
        if cfg.racp and cfg.racp_per_anomaly > 0:
            images, racp_masks = [], []
            for i in range(k):
                for _ in range(cfg.racp_per_anomaly):
                    target = self._load(data, data.normal_paths[rng.integers(len(data.normal_paths))])
                    anomaly = self._load(data, data.anomaly_paths[i])
                    start = time.perf_counter()
                    out = self.racp_(anomaly, data.anomaly_masks[i], target, data.kind, rng)
                    self.timings_["synthetic_anomalies"] += time.perf_counter() - start
                    if out is None:
                        self.counters_["racp_empty"] += 1
                        continue
                    images.append(out[0])
                    racp_masks.append(out[1])
            if images:
                items += images
                masks = torch.cat([masks, torch.from_numpy(np.stack(racp_masks))])
                self.counters_["racp_samples"] += len(images)
        return items, masks

    def _image_epoch(self, data, items, masks, meta, sub, phase2, rng) -> None:  # noqa: ANN001
        cfg = self.cfg
        for flow in self.flows_:
            flow.train()
        batches = self._batches(masks, rng)
        level_masks = [downsample_masks(masks, flow.grid) for flow in self.flows_]
        for b, idx in enumerate(batches):
            lr = learning_rate(cfg, meta, (sub + b / len(batches)) / cfg.sub_epochs)
            for group in self.optimizer_.param_groups:
                group["lr"] = lr
            feats = self._backbone([self._load(data, items[int(i)]) for i in idx])
            start = time.perf_counter()
            for level, (flow, f, m) in enumerate(zip(self.flows_, feats, level_masks, strict=True)):
                self._train_level(flow, f, m[idx], phase2, (meta, sub, level))
            _sync(self.device)
            self.timings_["flows_train"] += time.perf_counter() - start

    def score_batch1(self, paths: list[Path], load: Callable[[Path], np.ndarray], size: int) -> Scores:
        """Test images one at a time: read, backbone, flows; then the whole-set anomaly maps."""
        per_level: list[list[np.ndarray]] = [[] for _ in self.flows_]
        for path in paths:
            start = time.perf_counter()
            image = load(path)
            self.timings_["eval_load_images"] += time.perf_counter() - start
            start = time.perf_counter()
            feats = [f.cpu() for f in self.extractor(to_tensor([image]).to(self.device))]
            self.timings_["eval_backbone"] += time.perf_counter() - start
            start = time.perf_counter()
            for level, ll in enumerate(self.log_likelihoods(feats)):
                per_level[level].append(ll)
            self.timings_["eval_flows"] += time.perf_counter() - start
        start = time.perf_counter()
        scores = anomaly_maps([np.concatenate(p) for p in per_level], (size, size))
        self.timings_["eval_maps"] += time.perf_counter() - start
        return scores


def released_config(cfg: RunConfig) -> RunConfig:
    """The released code's flows: the positional code concatenated to every fiber."""
    return cfg.with_overrides({"shared_positions": False}, source="released way")


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


def image_data(data, known: list, uses_anomalies: bool, loader: FeatureCache) -> ImageData:  # noqa: ANN001
    """The training images (read per batch by ``loader``) and the known anomalies' masks."""
    size = loader.input_size
    anomaly_masks = (
        np.stack([load_mask(s, size)[0] for s in known])
        if uses_anomalies
        else np.zeros((0, size, size), np.uint8)
    )
    return ImageData(
        normal_paths=[s.image_path for s in data.train],
        anomaly_paths=[s.image_path for s in known] if uses_anomalies else [],
        anomaly_masks=anomaly_masks,
        kind=data.kind,
        load=loader.load_resized,
    )


def run_released_way(cfg: RunConfig, pro_timed: int | None = None) -> dict:
    """One cell the released code's way; per-meta-epoch metrics, time breakdown and counters."""
    t_start = time.perf_counter()
    cfg = released_config(cfg)
    spec = METHODS.get(cfg.method)
    torch.set_num_threads(cfg.threads)
    seed_everything(cfg.seed)
    data = load_category(cfg.dataset, cfg.category, Path(cfg.data_root) if cfg.data_root else None)
    known, test = known_and_test(cfg, data)
    extractor = ReleasedEncoder(cfg)
    device = resolve_device(cfg.device)
    extractor.to(device)
    size = cfg.input_size
    loader = FeatureCache(extractor, size)  # only for its read + resize
    uses_anomalies = spec.uses_anomalies and bool(known)
    shapes = [(c, size // s, size // s) for c, s in zip(extractor.channels, extractor.strides, strict=True)]
    detector = ReleasedWayDetector(cfg, spec, shapes, device, extractor)
    labels = np.array([s.label for s in test])
    history: list[dict] = []
    seconds: dict[str, float] = defaultdict(float)

    def evaluate(meta: int) -> None:
        for flow in detector.flows_:
            flow.eval()
        scores = detector.score_batch1([s.image_path for s in test], loader.load_resized, size)
        start = time.perf_counter()
        masks = np.stack([load_mask(s, size)[0] for s in test]) if data.has_pixel_masks else None
        detector.timings_["eval_load_images"] += time.perf_counter() - start
        metrics, metric_seconds = released_metrics(
            labels, scores.image_scores, masks, scores.maps if masks is not None else None, pro_timed
        )
        for key, value in metric_seconds.items():
            if key == "pro_extrapolated":
                seconds[key] = bool(value) or bool(seconds.get(key, False))
            else:
                seconds[key] += value
        history.append({"meta_epoch": meta, **metrics})

    detector.fit_images(image_data(data, known, uses_anomalies, loader), after_meta_epoch=evaluate)
    wall = time.perf_counter() - t_start
    timings = dict(detector.timings_)
    # The PRO loop is timed on a subset when asked: the wall clock then holds the measured part only.
    wall_extrapolated = wall - seconds.get("pro_measured", 0.0) + seconds.get("pro", 0.0)
    return {
        "history": history,
        "timings": timings,
        "metric_seconds": dict(seconds),
        "counters": dict(detector.counters_),
        "wall_measured": wall,
        "wall": wall_extrapolated,
    }
