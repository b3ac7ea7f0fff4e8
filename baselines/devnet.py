"""DevNet, image version (Pang, Ding, Shen, van den Hengel, "Explainable Deep Few-shot Anomaly Detection
with Deviation Networks", 2021; code: mala-lab/deviation-network-image): a supervised competitor of BGAD.

* **Network.** A fine-tuned backbone trunk, a 1×1 convolution to one score per feature cell, and top-k
  MIL pooling: the image score is the mean of the ⌊cells·``topk_ratio``⌋ largest |cell scores|. With
  ``n_scales`` = 2 the image and its half-size copy are scored and the two scores averaged.
* **Training.** Deviation loss against ``prior_samples`` fresh N(0, 1) draws with ``margin``: normal
  scores are pulled to the prior's mean, known anomalies pushed ``margin`` standard deviations above it;
  balanced batches (half normal, half known anomalies), every image randomly rotated; Adam, step decay,
  gradient norm clipped.
* **Maps.** The |cell scores| of each scale on the full-size grid, averaged: the "explainable" part.

Every default, where ours differs from the authors' and why: docs/supervised.md.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from bgad.baselines._supervised import (
    FineTunedBackbone,
    SupervisedDetector,
    deviation_loss,
    image_pyramid,
    mean_over_scales,
    topk_mean,
)
from torch import nn

from bgad.errors import UserError


class NoKnownAnomaliesError(UserError, ValueError):
    """DevNet was given no known anomalies; the message names the setting to change."""


class DevNetNetwork(nn.Module):
    """Backbone + 1×1 scoring convolution + top-k pooling over an image pyramid."""

    def __init__(self, backbone: FineTunedBackbone, topk_ratio: float, n_scales: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.scoring = nn.Conv2d(backbone.channels, 1, kernel_size=1)
        self.topk_ratio = topk_ratio
        self.n_scales = n_scales

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B,) image scores averaged over scales, and (B, h, w) |cell score| maps averaged over scales."""
        scores, maps = [], []
        for scaled in image_pyramid(images, self.n_scales):
            cells = self.scoring(self.backbone(scaled))[:, 0]
            scores.append(topk_mean(cells, self.topk_ratio))
            maps.append(cells.abs())
        return torch.stack(scores, 1).mean(1), mean_over_scales(maps)


@dataclass(eq=False, kw_only=True)
class DevNet(SupervisedDetector):
    """DevNet detector; the parameters and their defaults are those of ``SupervisedDetector`` (the
    authors' released ones: 50 epochs of 20 steps of 48 images, Adam 2e-4, margin 5, 5000 prior draws,
    top 10 %, two scales), on the suite's offline backbone."""

    epochs: int = 50

    def _check_anomalies(self, n_anomalies: int) -> None:
        if n_anomalies == 0:
            raise NoKnownAnomaliesError(
                "DevNet learns from known anomalies and got none: set n_known_anomalies to 1 or more "
                "(e.g. --set n_known_anomalies=10), or use a method trained on normal images only"
            )

    def _build_model(self, backbone: FineTunedBackbone) -> nn.Module:
        return DevNetNetwork(backbone, self.topk_ratio, self.n_scales)

    def _loss(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        scores, _ = self.model_(images)
        return deviation_loss(scores, labels != 0, self.prior(), self.margin)

    def _score_batches(self, images: torch.Tensor) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for chunk in self.chunks(images):
            yield self.model_(chunk)
