"""Log-likelihood maps -> anomaly maps -> image scores (METHOD.md §5)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Scores:
    """Anomaly maps (N,H,W) float64, image scores (N,), and how many images tie at the top score."""

    maps: np.ndarray
    image_scores: np.ndarray
    top_ties: int
    level_ll: list[np.ndarray] | None = None  # per-level log-likelihood maps, for flow methods


def anomaly_maps(level_ll: list[np.ndarray], size: tuple[int, int]) -> Scores:
    """Combine per-level ℓ maps of the WHOLE test set into anomaly maps.

    Per level: P = exp(ℓ − max ℓ) with one global max over all test images (a per-batch max changes
    both AUROCs), bilinear upsampling with align_corners=True, summed over levels; A = max(S) − S.
    All in float64: in float32 exp underflows early in training and many images tie.
    """
    total = None
    for ll in level_ll:
        ll64 = torch.as_tensor(np.asarray(ll, dtype=np.float64))
        prob = torch.exp(ll64 - ll64.max())
        up = F.interpolate(prob[:, None], size=size, mode="bilinear", align_corners=True)[:, 0]
        total = up if total is None else total + up
    maps = (total.max() - total).numpy()
    image_scores = maps.reshape(len(maps), -1).max(axis=1)
    top_ties = int(np.sum(image_scores == image_scores.max()))
    return Scores(maps=maps, image_scores=image_scores, top_ties=top_ties, level_ll=list(level_ll))
