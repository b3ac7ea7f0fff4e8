"""The flow-based detector shared by BGAD, BGAD w/o, NFAD and CFLOW-AD (METHOD.md §2–4).

One class trains one conditional flow per feature level on cached features; the registered method
only chooses the loss (``ml``, ``bgad_wo`` or ``bgad``) and default settings. Nothing here reads
files: the cell runner (``bgad.bench.cell``) hands in features, images and masks.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F

from bgad import threads
from bgad.anomalies import RandAugmentCutPaste, balanced_batches
from bgad.bench.config import RunConfig
from bgad.bench.method_registry import MethodSpec
from bgad.errors import DeterministicError
from bgad.flows import ConditionalFlow
from bgad.losses import BoundaryLossConfig, ml_loss, normal_boundary, semi_push_pull, weighted_ml
from bgad.scoring import ScoreReference, Scores, anomaly_maps


class Detector(Protocol):
    """What the cell runner needs of a method: fit on cached features, score a test set."""

    timings_: dict[str, float]
    counters_: dict[str, int]

    def fit(
        self,
        data: TrainingData,
        after_meta_epoch: Callable[[int], None] | None = None,
        on_sub_epoch: Callable[[int, int], None] | None = None,
    ) -> Detector: ...

    def score(self, feats: list[torch.Tensor], size: tuple[int, int]) -> Scores: ...

    def model_state(self) -> dict: ...

    def load_model_state(self, state: dict) -> Detector: ...


class NonFiniteLossError(DeterministicError, RuntimeError):
    """The loss became NaN or infinite; the message names where."""


def learning_rate(cfg: RunConfig, meta_epoch: int, progress: float) -> float:
    """Cosine over meta-epochs down to lr·lr_min_factor, with a linear warm-up from lr·warmup_start_factor.

    ``progress`` ∈ [0, 1) is the fraction of the current meta-epoch done. The warm-up is counted in
    iterations over the true number of batches of a meta-epoch (the released code uses a wrong loader
    length here).
    """
    eta_min = cfg.lr * cfg.lr_min_factor

    def cosine(epoch: float) -> float:
        return eta_min + (cfg.lr - eta_min) * (1 + math.cos(math.pi * epoch / cfg.meta_epochs)) / 2

    if meta_epoch < cfg.warmup_epochs:
        start = cfg.lr * cfg.warmup_start_factor
        end = cosine(cfg.warmup_epochs)
        return start + (meta_epoch + progress) / cfg.warmup_epochs * (end - start)
    return cosine(meta_epoch)


def sub_epochs_per_meta_epoch(cfg: RunConfig, n_normal: int) -> int:
    """Passes over the normal training images per meta-epoch: ``sub_epochs``, raised to reach
    ``min_images_per_meta_epoch`` images.

    Why: an epoch of 40 images and one of 1,700 differ 40-fold in optimizer steps; the released
    schedule (8 passes over MVTec's ~250 images, about 2,000 images per meta-epoch) is only
    meaningful in images seen. Profiles that must serve small and large datasets alike set the
    minimum instead of a fixed count (0 keeps ``sub_epochs`` as it is).
    """
    return max(cfg.sub_epochs, math.ceil(cfg.min_images_per_meta_epoch / max(n_normal, 1)))


@dataclass
class TrainingData:
    """Inputs of ``fit``: cached features of normal images and known anomalies, plus what RACP needs."""

    normal_features: list[torch.Tensor]  # per level (N,C,h,w)
    normal_images: np.ndarray  # (N,S,S,3) uint8, paste targets for RACP
    anomaly_features: list[torch.Tensor]  # per level (K,C,h,w)
    anomaly_images: np.ndarray  # (K,S,S,3) uint8
    anomaly_masks: np.ndarray  # (K,S,S) uint8 {0,1}
    kind: str  # "texture" or "object": where RACP may paste
    compute_features: Callable[[list[np.ndarray]], list[torch.Tensor]]


def downsample_masks(masks: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Nearest-neighbour downsampling of (N,S,S) {0,1} masks to a level's grid (pixel-level labels)."""
    return F.interpolate(masks[:, None].float(), size=size, mode="nearest")[:, 0].to(torch.uint8)


class FlowDetector:
    """Conditional flows over frozen features, trained with the method's loss; scores by log-likelihood."""

    def __init__(
        self,
        cfg: RunConfig,
        spec: MethodSpec,
        feature_shapes: list[tuple[int, int, int]],
        device: torch.device | str = "cpu",
    ) -> None:
        self.cfg = cfg
        self.device = torch.device(device)
        self.spec = spec
        self.loss_cfg = BoundaryLossConfig.from_settings(cfg)
        torch.manual_seed(cfg.seed)
        self.flows_ = [
            ConditionalFlow(
                c,
                (h, w),
                cfg.cond_dim,
                cfg.n_blocks,
                cfg.clamp,
                cfg.seed * 1000 + i,
                cfg.shared_positions,
                conditional=cfg.flow_arch == "conditional",
                standardize=cfg.feature_norm == "standardize",
            )
            for i, (c, h, w) in enumerate(feature_shapes)
        ]
        for flow in self.flows_:
            flow.to(self.device)
        params = [p for f in self.flows_ for p in f.parameters() if p.requires_grad]
        self.optimizer_ = torch.optim.Adam(params, lr=cfg.lr)
        self.generator_ = torch.Generator().manual_seed(cfg.seed)
        self.racp_ = RandAugmentCutPaste(n_transforms=cfg.racp_transforms)
        self.timings_: dict[str, float] = defaultdict(float)
        self.counters_: dict[str, int] = defaultdict(int)
        self._stats: dict[int, torch.Tensor] = {}
        self.score_reference_: ScoreReference | None = None
        self.loaded_reference_: ScoreReference | None = None

    # --- training ---------------------------------------------------------------------------------

    def fit(
        self,
        data: TrainingData,
        after_meta_epoch: Callable[[int], None] | None = None,
        on_sub_epoch: Callable[[int, int], None] | None = None,
    ) -> FlowDetector:
        cfg = self.cfg
        n_normal = len(data.normal_features[0])
        for flow, f in zip(self.flows_, data.normal_features, strict=True):
            flow.set_input_statistics(f)
        normal_masks = torch.zeros((n_normal, cfg.input_size, cfg.input_size), dtype=torch.uint8)
        self.sub_epochs_ = sub_epochs_per_meta_epoch(cfg, n_normal)
        self.counters_["sub_epochs_per_meta_epoch"] = self.sub_epochs_
        for meta in range(cfg.meta_epochs):
            phase2 = meta >= cfg.phase1_epochs and self.spec.loss != "ml"
            for sub in range(self.sub_epochs_):
                rng = np.random.default_rng([cfg.seed, meta, sub])
                feats, masks = data.normal_features, normal_masks
                if phase2 and self.spec.uses_anomalies and len(data.anomaly_images):
                    feats, masks = self._with_anomalies(data, normal_masks, rng)
                self._train_epoch(feats, masks, meta, sub, phase2, rng)
                if on_sub_epoch:
                    on_sub_epoch(meta, sub)
            if after_meta_epoch and ((meta + 1) % cfg.eval_every == 0 or meta == cfg.meta_epochs - 1):
                after_meta_epoch(meta)
        return self

    def _with_anomalies(
        self, data: TrainingData, normal_masks: torch.Tensor, rng: np.random.Generator
    ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """One epoch's pool: normals + each real anomaly ``repeats`` times + fresh RACP samples."""
        cfg = self.cfg
        k = len(data.anomaly_images)
        pool_feats = [
            torch.cat([n, a.repeat(cfg.repeats, 1, 1, 1)])
            for n, a in zip(data.normal_features, data.anomaly_features, strict=True)
        ]
        real_masks = torch.from_numpy(data.anomaly_masks).repeat(cfg.repeats, 1, 1)
        pool_masks = torch.cat([normal_masks, real_masks])
        self.counters_["real_anomaly_samples"] += cfg.repeats * k
        if cfg.racp and cfg.racp_per_anomaly > 0:
            start = time.perf_counter()
            images, masks = [], []
            for i in range(k):
                for _ in range(cfg.racp_per_anomaly):
                    target = data.normal_images[rng.integers(len(data.normal_images))]
                    out = self.racp_(data.anomaly_images[i], data.anomaly_masks[i], target, data.kind, rng)
                    if out is None:  # an empty pasted mask is not an anomaly
                        self.counters_["racp_empty"] += 1
                        continue
                    images.append(out[0])
                    masks.append(out[1])
            self.timings_["synthetic_anomalies"] += time.perf_counter() - start
            if images:
                start = time.perf_counter()
                racp_feats = data.compute_features(images)
                self.timings_["backbone_racp"] += time.perf_counter() - start
                pool_feats = [torch.cat([p, r]) for p, r in zip(pool_feats, racp_feats, strict=True)]
                pool_masks = torch.cat([pool_masks, torch.from_numpy(np.stack(masks))])
                self.counters_["racp_samples"] += len(images)
        return pool_feats, pool_masks

    def _batches(self, masks: torch.Tensor, rng: np.random.Generator) -> list[torch.Tensor]:
        n = len(masks)
        if self.cfg.balanced_sampler:
            labels = (masks.flatten(1).amax(1) > 0).numpy().astype(int)
            if 0 < labels.sum() < n:
                return [torch.from_numpy(b) for b in balanced_batches(labels, self.cfg.batch_size, rng)]
        order = torch.randperm(n, generator=self.generator_)
        return list(order.split(self.cfg.batch_size))

    def _train_epoch(
        self,
        feats: list[torch.Tensor],
        masks: torch.Tensor,
        meta: int,
        sub: int,
        phase2: bool,
        rng: np.random.Generator,
    ) -> None:
        cfg = self.cfg
        for flow in self.flows_:
            flow.train()
        batches = self._batches(masks, rng)
        level_masks = [downsample_masks(masks, f.shape[-2:]) for f in feats]
        start = time.perf_counter()
        for b, idx in enumerate(batches):
            lr = learning_rate(cfg, meta, (sub + b / len(batches)) / self.sub_epochs_)
            for group in self.optimizer_.param_groups:
                group["lr"] = lr
            for level, (flow, f, m) in enumerate(zip(self.flows_, feats, level_masks, strict=True)):
                self._train_level(flow, f[idx], m[idx], phase2, (meta, sub, level))
        self.timings_["flows_train"] += time.perf_counter() - start

    def _train_level(
        self,
        flow: ConditionalFlow,
        e: torch.Tensor,
        m: torch.Tensor,
        phase2: bool,
        where: tuple[int, int, int],
    ) -> None:
        bsz, channels, h, w = e.shape
        fibers = e.to(self.device).permute(0, 2, 3, 1).reshape(-1, channels)
        labels = m.to(self.device).reshape(-1)
        pos_index = torch.arange(h * w, device=self.device).repeat(bsz)
        b_n = None
        if phase2 and self.cfg.spp_variant == "paper" and self.spec.loss != "ml":
            with torch.no_grad():
                ll_all = flow(fibers, pos_index)
            if (labels == 0).any():
                b_n = normal_boundary(ll_all[labels == 0], self.cfg.beta, self.cfg.normalizer)
        perm = torch.randperm(len(fibers), generator=self.generator_)
        for chunk_no, chunk in enumerate(perm.to(self.device).split(self.cfg.fiber_size)):
            threads.tick()
            ll = flow(fibers[chunk], pos_index[chunk])
            loss = self._loss(ll, labels[chunk], phase2, b_n)
            if not torch.isfinite(loss):
                meta, sub, level = where
                raise NonFiniteLossError(
                    f"non-finite loss ({loss.item()}) at meta-epoch {meta}, sub-epoch {sub}, level {level}, "
                    f"fiber chunk {chunk_no} (method {self.spec.name}, lr {self.optimizer_.param_groups[0]['lr']:.2e}). "
                    "Try a lower --set lr=..., or --set focal_clip=... for the unbounded anomalous focal weight."
                )
            self.optimizer_.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer_.step()
            self.counters_["optimizer_steps"] += 1
            self.counters_["fibers_trained"] += len(chunk)
            self._track(where[2], loss, ll, labels[chunk])

    def _track(self, level: int, loss: torch.Tensor, ll: torch.Tensor, labels: torch.Tensor) -> None:
        """Accumulate the loss and the normal fibers' ℓ of each level (tensors: no sync per step)."""
        stats = self._stats.setdefault(level, torch.zeros(4, dtype=torch.float64, device=ll.device))
        normal = labels == 0
        stats += torch.stack(
            [
                loss.detach().double(),
                torch.ones((), dtype=torch.float64, device=ll.device),
                ll.detach()[normal].double().sum(),
                normal.sum().double(),
            ]
        )

    def training_summary(self) -> dict:
        """Mean loss and mean ℓ of normal training fibers per level since the last call (then reset).

        The learning curve of the density itself: ℓ of the training data, as the optimizer saw it.
        """
        levels = sorted(self._stats)
        values = [self._stats[lvl].cpu().tolist() for lvl in levels]
        self._stats = {}
        if not values:
            return {}
        return {
            "train_loss": sum(v[0] for v in values) / max(sum(v[1] for v in values), 1),
            "train_ll": [v[2] / v[3] if v[3] else float("nan") for v in values],
        }

    def _loss(
        self, ll: torch.Tensor, labels: torch.Tensor, phase2: bool, b_n: torch.Tensor | None
    ) -> torch.Tensor:
        if not phase2:
            return ml_loss(ll).mean()
        normal_count = int((labels == 0).sum())
        if self.spec.loss == "bgad_wo" and normal_count:
            return semi_push_pull(ll, labels, self.loss_cfg, b_n=b_n, push=False)
        if self.spec.loss in ("bgad", "bgad_cc") and (labels == 1).any() and normal_count:
            return semi_push_pull(ll, labels, self.loss_cfg, b_n=b_n, semi=self.spec.loss == "bgad")
        if normal_count == 0:  # a chunk of anomalous locations only: nothing to bound them against
            self.counters_["chunks_without_normals"] += 1
            return ll.sum() * 0.0
        return weighted_ml(ll, self.loss_cfg)

    # --- scoring ----------------------------------------------------------------------------------

    def score(self, feats: list[torch.Tensor], size: tuple[int, int]) -> Scores:
        """Anomaly maps of a whole test set from its per-level log-likelihoods.

        A loaded model scores on the scale of the set it was evaluated on (``score_reference_``);
        otherwise the set's own maxima are used and remembered for saving.
        """
        scores = anomaly_maps(self.log_likelihoods(feats), size, self.loaded_reference_)
        self.score_reference_ = scores.reference
        return scores

    # --- persistence ------------------------------------------------------------------------------

    def model_state(self) -> dict:
        """What a saved model needs: the flows (input layers included) and the scoring constants."""
        reference = self.score_reference_
        return {
            "flows": [flow.state_dict() for flow in self.flows_],
            "score_reference": None if reference is None else dataclasses.asdict(reference),
        }

    def load_model_state(self, state: dict) -> FlowDetector:
        for flow, flow_state in zip(self.flows_, state["flows"], strict=True):
            flow.load_state_dict(flow_state)
        ref = state.get("score_reference")
        self.loaded_reference_ = (
            None if ref is None else ScoreReference(tuple(ref["level_max"]), ref["sum_max"])
        )
        return self

    @torch.no_grad()
    def log_likelihoods(
        self, feats: list[torch.Tensor], max_fibers: int = 4096, eval_mode: bool = True
    ) -> list[np.ndarray]:
        """Per-level ℓ maps (N,h,w) in float64 for images given by their cached features.

        Fibers go through in chunks of ``max_fibers``: larger chunks only add memory traffic (on 2 CPU
        cores 65536-fiber chunks ran up to 2.4x slower than 4096-fiber ones, benchmarks/speed.py).
        ``eval_mode=False`` keeps each flow's current mode (to check that the mode changes nothing).
        """
        out = []
        for flow, f in zip(self.flows_, feats, strict=True):
            if eval_mode:
                flow.eval()
            n, channels, h, w = f.shape
            fibers = f.permute(0, 2, 3, 1).reshape(-1, channels)
            pos_index = torch.arange(h * w, device=self.device).repeat(n)
            chunks = []
            for s in range(0, len(fibers), max_fibers):
                threads.tick()
                chunks.append(
                    flow(fibers[s : s + max_fibers].to(self.device), pos_index[s : s + max_fibers]).cpu()
                )
            ll = torch.cat(chunks)
            out.append(ll.double().reshape(n, h, w).numpy())
        return out
