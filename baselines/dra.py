"""DRA (Ding, Pang, Shen, "Catching Both Gray and Black Swans: Open-set Supervised Anomaly Detection",
CVPR 2022; code: Choubo/DRA): a supervised competitor of BGAD that also aims at unseen anomaly types.

One fine-tuned backbone trunk feeds four heads, each trained with its own deviation loss (summed):

* **holistic normality** — global average pool, MLP (``holistic_hidden`` units, ReLU, dropout), |·|;
  trained with the targets flipped (normal images are pushed ``margin`` above the prior), so a large
  value means "normal";
* **seen abnormality** — 1×1 convolution + top-k pooling, on normal images and known anomalies;
* **pseudo abnormality** — the same kind of head, on normal images and pseudo anomalies: a rectangle of
  a normal image, colour-jittered and pasted elsewhere in it (the authors' ``CutMix``), which replaces
  each normal slot of a batch with probability ``pseudo_fraction``;
* **latent residual abnormality** — the feature difference between the mean of ``n_ref`` reference
  normal images and the image, through 3×3 convolution + batch norm + ReLU, then 1×1 + top-k, on all.

Each head runs on the ``n_scales`` image pyramid and its scores are averaged over scales. The composite
score is seen + pseudo + residual − holistic (``composite_score``). Maps: the same sum per cell
(|cell scores| of the three patch heads, averaged over scales, minus the holistic score).

Every default, where ours differs from the authors' and why: docs/supervised.md.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF
from bgad.baselines._supervised import (
    FineTunedBackbone,
    PermutationStream,
    SupervisedDetector,
    deviation_loss,
    image_pyramid,
    mean_over_scales,
    topk_mean,
)
from torch import nn

#: Training labels; references are the residual head's anchor images, not trained on.
REFERENCE, NORMAL, SEEN, PSEUDO = -1, 0, 1, 2


def composite_score(
    holistic: torch.Tensor, seen: torch.Tensor, pseudo: torch.Tensor, residual: torch.Tensor
) -> torch.Tensor:
    """DRA's anomaly score: the three abnormality scores minus the holistic normality score."""
    return seen + pseudo + residual - holistic


class HeadOutputs(NamedTuple):
    """Per-head image scores (B,) averaged over scales, and their (B, h, w) |cell score| maps."""

    holistic: torch.Tensor
    seen: torch.Tensor
    pseudo: torch.Tensor
    residual: torch.Tensor
    maps: torch.Tensor

    def composite(self) -> torch.Tensor:
        return composite_score(self.holistic, self.seen, self.pseudo, self.residual)


class HolisticHead(nn.Module):
    """Global average pool → Linear → ReLU → dropout → Linear → |·|."""

    def __init__(self, channels: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.fc1 = nn.Linear(channels, hidden)
        self.fc2 = nn.Linear(hidden, 1)
        self.drop = nn.Dropout(dropout)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        pooled = features.mean(dim=(2, 3))
        return self.fc2(self.drop(F.relu(self.fc1(pooled))))[:, 0].abs()


class ResidualHead(nn.Module):
    """(mean reference features − features) → 3×3 conv + BN + ReLU → 1×1 conv: one score per cell."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1), nn.BatchNorm2d(channels), nn.ReLU()
        )
        self.scoring = nn.Conv2d(channels, 1, kernel_size=1)

    def forward(self, features: torch.Tensor, reference_mean: torch.Tensor) -> torch.Tensor:
        return self.scoring(self.conv(reference_mean - features))[:, 0]


class DRANetwork(nn.Module):
    """The shared trunk and the four heads, over an image pyramid."""

    def __init__(
        self, backbone: FineTunedBackbone, topk_ratio: float, n_scales: int, hidden: int, dropout: float
    ) -> None:
        super().__init__()
        c = backbone.channels
        self.backbone = backbone
        self.holistic = HolisticHead(c, hidden, dropout)
        self.seen = nn.Conv2d(c, 1, kernel_size=1)
        self.pseudo = nn.Conv2d(c, 1, kernel_size=1)
        self.residual = ResidualHead(c)
        self.topk_ratio = topk_ratio
        self.n_scales = n_scales

    def features(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Trunk features of each pyramid level."""
        return [self.backbone(scaled) for scaled in image_pyramid(images, self.n_scales)]

    def heads(self, features: list[torch.Tensor], reference_means: list[torch.Tensor]) -> HeadOutputs:
        """All heads on per-level features, given the (1, C, h, w) mean reference features per level."""
        per_head: dict[str, list[torch.Tensor]] = {k: [] for k in ("holistic", "seen", "pseudo", "residual")}
        maps = []
        for feats, ref in zip(features, reference_means, strict=True):
            cells = {
                "seen": self.seen(feats)[:, 0],
                "pseudo": self.pseudo(feats)[:, 0],
                "residual": self.residual(feats, ref),
            }
            holistic = self.holistic(feats)
            per_head["holistic"].append(holistic)
            for name, c in cells.items():
                per_head[name].append(topk_mean(c, self.topk_ratio))
            maps.append(sum(c.abs() for c in cells.values()))
        scores = {k: torch.stack(v, 1).mean(1) for k, v in per_head.items()}
        return HeadOutputs(**scores, maps=mean_over_scales(maps) - scores["holistic"][:, None, None])

    def forward(self, images: torch.Tensor, references: torch.Tensor) -> HeadOutputs:
        """Training pass: references and images through the trunk together (one batch-norm batch, as
        the authors), the references' mean features as the residual head's anchor."""
        n_ref = len(references)
        levels = self.features(torch.cat([references, images]))
        means = [f[:n_ref].mean(0, keepdim=True) for f in levels]
        return self.heads([f[n_ref:] for f in levels], means)


def uniform(low: float, high: float, generator: torch.Generator) -> float:
    """One draw of U(low, high) from ``generator``."""
    return low + (high - low) * float(torch.rand((), generator=generator))


def color_jitter(patch: torch.Tensor, amount: float, generator: torch.Generator) -> torch.Tensor:
    """torchvision's ``ColorJitter(amount, amount, amount, amount)`` drawing from ``generator``:
    brightness, contrast and saturation factors U(1 − amount, 1 + amount), hue shift U(−amount, amount),
    applied in a random order."""
    if amount <= 0:
        return patch
    b, c, s = (uniform(max(0.0, 1 - amount), 1 + amount, generator) for _ in range(3))
    hue = uniform(-min(amount, 0.5), min(amount, 0.5), generator)
    ops = [
        lambda x: TF.adjust_brightness(x, b),
        lambda x: TF.adjust_contrast(x, c),
        lambda x: TF.adjust_saturation(x, s),
        lambda x: TF.adjust_hue(x, hue),
    ]
    for i in torch.randperm(4, generator=generator).tolist():
        patch = ops[i](patch)
    return patch


def pseudo_anomaly(
    image: torch.Tensor,
    generator: torch.Generator,
    area_ratio: tuple[float, float] = (0.02, 0.15),
    aspect_ratio: float = 0.3,
    jitter: float = 0.1,
) -> torch.Tensor:
    """DRA's "CutMix" pseudo anomaly (a CutPaste within one image): a rectangle of U(area_ratio) of the
    image area, aspect log-uniform in [aspect_ratio, 1/aspect_ratio], colour-jittered, pasted at another
    uniformly drawn place of the same image."""
    _, h, w = image.shape
    area = uniform(*area_ratio, generator) * h * w
    aspect = math.exp(uniform(math.log(aspect_ratio), -math.log(aspect_ratio), generator))
    cut_w = min(w, int(round(math.sqrt(area * aspect))))
    cut_h = min(h, int(round(math.sqrt(area / aspect))))
    y0, x0 = int(uniform(0, h - cut_h, generator)), int(uniform(0, w - cut_w, generator))
    y1, x1 = int(uniform(0, h - cut_h, generator)), int(uniform(0, w - cut_w, generator))
    patch = color_jitter(image[:, y0 : y0 + cut_h, x0 : x0 + cut_w], jitter, generator)
    out = image.clone()
    out[:, y1 : y1 + cut_h, x1 : x1 + cut_w] = patch
    return out


@dataclass(eq=False, kw_only=True)
class DRA(SupervisedDetector):
    """DRA detector; shared parameters as ``SupervisedDetector`` (the authors' defaults, 30 epochs),
    plus its own: ``n_ref`` reference normals, ``pseudo_fraction`` of normal slots made pseudo
    anomalies, the CutMix shape and jitter, the holistic head's width and dropout."""

    epochs: int = 30
    n_ref: int = 5
    pseudo_fraction: float = 0.5
    cutmix_area: tuple[float, float] = (0.02, 0.15)
    cutmix_aspect: float = 0.3
    cutmix_jitter: float = 0.1
    holistic_hidden: int = 256
    holistic_dropout: float = 0.0

    def _build_model(self, backbone: FineTunedBackbone) -> nn.Module:
        return DRANetwork(
            backbone, self.topk_ratio, self.n_scales, self.holistic_hidden, self.holistic_dropout
        )

    def _prepare(self, normal: torch.Tensor) -> None:
        """A stream of training references, and a fixed reference set for scoring."""
        self.reference_stream_ = PermutationStream(len(normal), self.generator_)
        self.reference_images_ = normal[torch.randperm(len(normal), generator=self.generator_)[: self.n_ref]]

    def _extra_state(self) -> dict:
        """The fixed reference images scoring compares with: a saved model must score as the cell did."""
        return {"reference_images": self.reference_images_}

    def _load_extra_state(self, state: dict) -> None:
        self.reference_images_ = state["reference_images"].cpu()  # moved to the device per scoring call

    def _training_batch(
        self, normal: torch.Tensor, anomalies: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The balanced batch with each normal slot, with probability ``pseudo_fraction``, replaced by a
        pseudo anomaly made from a uniformly drawn normal image (label 2), preceded by ``n_ref``
        reference normals (label −1) so that they get the same augmentation."""
        images, labels = super()._training_batch(normal, anomalies)
        slots = (labels == NORMAL) & (
            torch.rand(len(labels), generator=self.generator_) < self.pseudo_fraction
        )
        for i in slots.nonzero().flatten().tolist():
            source = normal[int(torch.randint(len(normal), (), generator=self.generator_))]
            images[i] = pseudo_anomaly(
                source, self.generator_, self.cutmix_area, self.cutmix_aspect, self.cutmix_jitter
            )
            labels[i] = PSEUDO
        references = normal[self.reference_stream_.take(self.n_ref)]
        return torch.cat([references, images]), torch.cat([torch.full((len(references),), REFERENCE), labels])

    def _loss(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        is_ref = labels == REFERENCE
        out = self.model_(images[~is_ref], images[is_ref])
        labels = labels[~is_ref]
        abnormal = labels != NORMAL
        everything = torch.ones_like(abnormal)
        terms = [
            (out.holistic, ~abnormal, everything),
            (out.seen, abnormal, labels != PSEUDO),
            (out.pseudo, abnormal, labels != SEEN),
            (out.residual, abnormal, everything),
        ]
        return sum(
            deviation_loss(scores[used], targets[used], self.prior(), self.margin)
            for scores, targets, used in terms
            if used.any()
        )

    def _score_batches(self, images: torch.Tensor) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        net: DRANetwork = self.model_
        means = [f.mean(0, keepdim=True) for f in net.features(self.reference_images_.to(self.device_))]
        for chunk in self.chunks(images):
            out = net.heads(net.features(chunk), means)
            yield out.composite(), out.maps
