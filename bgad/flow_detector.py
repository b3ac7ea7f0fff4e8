"""The flow detector of BGAD and its ablations, and what every detector shares (docs/method.md §2–4).

``FlowDetector`` trains one conditional flow per feature level on cached features with the loss its
class chooses (``loss_class``, ``bgad.losses``): ``BGAD`` (boundary-guided semi-push-pull with known
and RACP anomalies), ``BGADWithoutAnomalies`` and ``BGADConventional`` (the slides' BGAD†); NFAD and
CFLOW-AD (``bgad.baselines``) are the same flows trained by maximum likelihood. Nothing here reads
files: the suite's cell runner hands in features, images and masks.

Every detector follows scikit-learn's rule: the constructor only stores its parameters (named as the
method's typed settings, plus ``seed`` and ``device``); ``fit`` creates the fitted state, whose names
end in ``_``, from the training data (feature shapes included).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import ClassVar, Literal, NamedTuple, Protocol, Self

import numpy as np
import torch
import torch.nn.functional as F

from bgad import threads
from bgad.anomalies import RandAugmentCutPaste, balanced_batches
from bgad.errors import DeterministicError
from bgad.flows import ConditionalFlow
from bgad.losses import BoundaryGuided, FlowLoss, PushPullAll, SemiPull, ml_loss
from bgad.scoring import ScoreReference, Scores, anomaly_maps

#: Feature maps' (channels, height, width) per level.
FeatureShapes = Sequence[Sequence[int]]


class NonFiniteLossError(DeterministicError, RuntimeError):
    """The loss became NaN or infinite; the message names where."""


class Schedule(Protocol):
    """The settings the training schedule reads (a flow detector has them, and so has a run config)."""

    lr: float
    lr_min_factor: float
    warmup_start_factor: float
    warmup_epochs: int
    meta_epochs: int
    sub_epochs: int
    min_images_per_meta_epoch: int


def learning_rate(cfg: Schedule, meta_epoch: int, progress: float) -> float:
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


def sub_epochs_per_meta_epoch(cfg: Schedule, n_normal: int) -> int:
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

    @property
    def feature_shapes(self) -> list[tuple[int, int, int]]:
        """(channels, height, width) of each level: what a detector is built for."""
        return [tuple(f.shape[1:]) for f in self.normal_features]


def downsample_masks(masks: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Nearest-neighbour downsampling of (N,S,S) {0,1} masks to a level's grid (pixel-level labels)."""
    return F.interpolate(masks[:, None].float(), size=size, mode="nearest")[:, 0].to(torch.uint8)


@contextmanager
def private_global_rng(seed: int, device: torch.device) -> Iterator[None]:
    """Run a block with torch's global RNG seeded to ``seed``, restoring the caller's state afterwards.

    Why: module initialisation (``nn.Linear``, timm) and dropout can only draw from the global RNG;
    forking it keeps them a function of the detector's seed and leaves the caller's stream untouched.
    """
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


class FitHooks(NamedTuple):
    """The runner's calls during ``fit``: evaluate after a meta-epoch, show progress after a pass."""

    after_meta_epoch: Callable[[int], None]
    on_sub_epoch: Callable[[int, int], None]


def _no_hook(*_: int) -> None:
    """A hook the caller did not ask for."""


@dataclass(eq=False, kw_only=True)
class Detector:
    """What the cell runner needs of a method: ``fit`` on cached features, ``score`` a test set, and the
    fitted state to save (``model_state``) and load again.

    ``seed`` is the cell's seed (every random choice of ``fit`` derives from it); ``device`` where the
    detector computes. Subclasses add their parameters and ``_fit``, ``_load``, ``score``, ``model_state``.
    """

    seed: int = 0
    device: str | torch.device = "cpu"

    def fit(
        self,
        data: TrainingData,
        after_meta_epoch: Callable[[int], None] | None = None,
        on_sub_epoch: Callable[[int, int], None] | None = None,
    ) -> Self:
        """Fit on ``data``; ``after_meta_epoch(meta)`` is called where the runner should evaluate,
        ``on_sub_epoch(meta, sub)`` after each pass over the normal images (progress)."""
        self._start_bookkeeping()
        self._fit(data, FitHooks(after_meta_epoch or _no_hook, on_sub_epoch or _no_hook))
        return self

    def load_model_state(self, state: dict, feature_shapes: FeatureShapes) -> Self:
        """Restore a saved ``model_state`` for features of these (channels, height, width) per level."""
        self._start_bookkeeping()
        self._load(state, [tuple(int(v) for v in shape) for shape in feature_shapes])
        return self

    def _start_bookkeeping(self) -> None:
        self.timings_: dict[str, float] = defaultdict(float)
        self.counters_: dict[str, int] = defaultdict(int)

    def _fit(self, data: TrainingData, hooks: FitHooks) -> None:
        raise NotImplementedError

    def _load(self, state: dict, feature_shapes: list[tuple[int, ...]]) -> None:
        raise NotImplementedError

    def score(self, feats: list[torch.Tensor], size: tuple[int, int]) -> Scores:
        """Anomaly maps (N, *size) and image scores of a test set given by its cached features."""
        raise NotImplementedError

    def model_state(self) -> dict:
        """The fitted state a saved model keeps (tensors and plain values)."""
        raise NotImplementedError


@dataclass(eq=False, kw_only=True)
class FlowDetector(Detector):
    """Conditional flows over frozen features, trained with ``loss_class``; scores by log-likelihood.

    The parameters are the suite's ``FlowParams`` (flows, schedule, known-anomaly pool,
    the loss's settings), and ``shared_positions``, a run setting that changes how the flows compute
    the positional condition, never the numbers.
    """

    loss_class: ClassVar[type[FlowLoss]]

    n_blocks: int = 8
    clamp: float = 1.9
    cond_dim: int = 128
    flow_arch: Literal["conditional", "unconditional"] = "conditional"
    feature_norm: Literal["none", "standardize"] = "none"
    meta_epochs: int = 25
    sub_epochs: int = 8
    min_images_per_meta_epoch: int = 0
    phase1_epochs: int = 1
    warmup_epochs: int = 2
    batch_size: int = 32
    lr: float = 2e-4
    lr_min_factor: float = 1e-3
    warmup_start_factor: float = 0.1
    fiber_size: int = 4096
    repeats: int = 5
    racp: bool = True
    racp_per_anomaly: int = 5
    racp_transforms: int = 3
    balanced_sampler: bool = False
    beta: float = 0.01
    tau: float = 0.1
    normalizer: float = 10.0
    lam: float = 1.0
    focal: bool = True
    focal_clip: float | None = None
    spp_variant: Literal["code", "paper"] = "code"
    eval_every: int = 1
    shared_positions: bool = True

    def _build_flows(self, feature_shapes: FeatureShapes) -> None:
        """One flow per level, initialised from the seed alone (a forked torch RNG: no global seeding)."""
        device = torch.device(self.device)
        with private_global_rng(self.seed, device):
            self.flows_ = [
                ConditionalFlow(
                    c,
                    (h, w),
                    self.cond_dim,
                    self.n_blocks,
                    self.clamp,
                    self.seed * 1000 + i,
                    self.shared_positions,
                    conditional=self.flow_arch == "conditional",
                    standardize=self.feature_norm == "standardize",
                )
                for i, (c, h, w) in enumerate(feature_shapes)
            ]
        for flow in self.flows_:
            flow.to(device)

    def _start(self, data: TrainingData) -> None:
        """The fitted state before the first step: loss, flows, optimizer, random streams, RACP."""
        self.loss_ = self.loss_class.from_settings(self)
        self._build_flows(data.feature_shapes)
        params = [p for f in self.flows_ for p in f.parameters() if p.requires_grad]
        self.optimizer_ = torch.optim.Adam(params, lr=self.lr)
        self.generator_ = torch.Generator().manual_seed(self.seed)
        self.racp_ = RandAugmentCutPaste(n_transforms=self.racp_transforms)
        self.score_reference_: ScoreReference | None = None
        self.loaded_reference_: ScoreReference | None = None
        self._stats: dict[int, torch.Tensor] = {}
        for flow, f in zip(self.flows_, data.normal_features, strict=True):
            flow.set_input_statistics(f)
        self.sub_epochs_ = sub_epochs_per_meta_epoch(self, len(data.normal_features[0]))
        self.counters_["sub_epochs_per_meta_epoch"] = self.sub_epochs_

    # --- training ---------------------------------------------------------------------------------

    def _fit(self, data: TrainingData, hooks: FitHooks) -> None:
        """Phase 1 by maximum likelihood on normal images; from ``phase1_epochs`` on, a guided loss's
        phase 2, with the known and RACP anomalies when the loss learns from them."""
        self._start(data)
        n_normal = len(data.normal_features[0])
        normal_masks = torch.zeros((n_normal, *data.anomaly_masks.shape[1:]), dtype=torch.uint8)
        for meta in range(self.meta_epochs):
            phase2 = meta >= self.phase1_epochs and self.loss_.guided
            for sub in range(self.sub_epochs_):
                rng = np.random.default_rng([self.seed, meta, sub])
                feats, masks = data.normal_features, normal_masks
                if phase2 and self.loss_.uses_anomalies and len(data.anomaly_images):
                    feats, masks = self._with_anomalies(data, normal_masks, rng)
                self._train_epoch(feats, masks, meta, sub, phase2, rng)
                hooks.on_sub_epoch(meta, sub)
            if (meta + 1) % self.eval_every == 0 or meta == self.meta_epochs - 1:
                hooks.after_meta_epoch(meta)

    def _with_anomalies(
        self, data: TrainingData, normal_masks: torch.Tensor, rng: np.random.Generator
    ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """One epoch's pool: normals + each real anomaly ``repeats`` times + fresh RACP samples."""
        k = len(data.anomaly_images)
        pool_feats = [
            torch.cat([n, a.repeat(self.repeats, 1, 1, 1)])
            for n, a in zip(data.normal_features, data.anomaly_features, strict=True)
        ]
        real_masks = torch.from_numpy(data.anomaly_masks).repeat(self.repeats, 1, 1)
        pool_masks = torch.cat([normal_masks, real_masks])
        self.counters_["real_anomaly_samples"] += self.repeats * k
        if self.racp and self.racp_per_anomaly > 0:
            start = time.perf_counter()
            images, masks = [], []
            for i in range(k):
                for _ in range(self.racp_per_anomaly):
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
        if self.balanced_sampler:
            labels = (masks.flatten(1).amax(1) > 0).numpy().astype(int)
            if 0 < labels.sum() < n:
                return [torch.from_numpy(b) for b in balanced_batches(labels, self.batch_size, rng)]
        order = torch.randperm(n, generator=self.generator_)
        return list(order.split(self.batch_size))

    def _train_epoch(
        self,
        feats: list[torch.Tensor],
        masks: torch.Tensor,
        meta: int,
        sub: int,
        phase2: bool,
        rng: np.random.Generator,
    ) -> None:
        for flow in self.flows_:
            flow.train()
        batches = self._batches(masks, rng)
        level_masks = [downsample_masks(masks, f.shape[-2:]) for f in feats]
        start = time.perf_counter()
        for b, idx in enumerate(batches):
            lr = learning_rate(self, meta, (sub + b / len(batches)) / self.sub_epochs_)
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
        if phase2 and self.loss_.batch_boundary:
            with torch.no_grad():
                ll_all = flow(fibers, pos_index)
            if (labels == 0).any():
                b_n = self.loss_.boundary(ll_all[labels == 0])
        perm = torch.randperm(len(fibers), generator=self.generator_)
        for chunk_no, chunk in enumerate(perm.to(self.device).split(self.fiber_size)):
            threads.tick()
            ll = flow(fibers[chunk], pos_index[chunk])
            loss = self._loss(ll, labels[chunk], phase2, b_n)
            if not torch.isfinite(loss):
                meta, sub, level = where
                raise NonFiniteLossError(
                    f"non-finite loss ({loss.item()}) at meta-epoch {meta}, sub-epoch {sub}, level {level}, "
                    f"fiber chunk {chunk_no} ({type(self).__name__}, lr {self.optimizer_.param_groups[0]['lr']:.2e}). "
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
        """Phase 1: maximum likelihood; phase 2: the method's loss (``loss_``) on chunks with normals."""
        if not phase2:
            return ml_loss(ll).mean()
        if not (labels == 0).any():  # a chunk of anomalous locations only: nothing to bound them against
            self.counters_["chunks_without_normals"] += 1
            return ll.sum() * 0.0
        return self.loss_(ll, labels, b_n)

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

    def _load(self, state: dict, feature_shapes: list[tuple[int, ...]]) -> None:
        self._build_flows(feature_shapes)
        for flow, flow_state in zip(self.flows_, state["flows"], strict=True):
            flow.load_state_dict(flow_state)
        ref = state.get("score_reference")
        self.score_reference_ = None
        self.loaded_reference_ = (
            None if ref is None else ScoreReference(tuple(ref["level_max"]), ref["sum_max"])
        )

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


class BGAD(FlowDetector):
    """BGAD: maximum likelihood in phase 1, then ML + boundary-guided semi-push-pull with the known
    and RACP anomalies."""

    loss_class = BoundaryGuided


class BGADWithoutAnomalies(FlowDetector):
    """BGAD w/o anomalies: maximum likelihood, then ML + semi-pull of the normal locations only."""

    loss_class = SemiPull


class BGADConventional(FlowDetector):
    """BGAD† (the slides' ablation): the boundaries with a conventional pull-all/push-all contrastive loss."""

    loss_class = PushPullAll
