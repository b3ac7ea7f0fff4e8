"""Log-likelihood maps -> anomaly maps -> image scores (docs/method.md §4)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class ScoreReference:
    """The set-wide constants of the flows' scoring: max ℓ per level and the max of the summed map.

    The released scoring normalises by maxima over the whole test set. A saved model keeps the maxima
    of the set it was evaluated on, so new images are scored on the same scale (and the test images
    themselves get exactly the cell's scores).
    """

    level_max: tuple[float, ...]
    sum_max: float


@dataclass(frozen=True)
class Scores:
    """Anomaly maps (N,H,W) float64, image scores (N,), and how many images tie at the top score."""

    maps: np.ndarray
    image_scores: np.ndarray
    top_ties: int
    level_ll: list[np.ndarray] | None = None  # per-level log-likelihood maps, for flow methods
    reference: ScoreReference | None = None  # the constants used (flow methods)


def anomaly_maps(
    level_ll: list[np.ndarray], size: tuple[int, int], reference: ScoreReference | None = None
) -> Scores:
    """Combine per-level ℓ maps of the WHOLE test set into anomaly maps.

    Per level: P = exp(ℓ − max ℓ) with one global max over all test images (a per-batch max changes
    both AUROCs), bilinear upsampling with align_corners=True, summed over levels; A = max(S) − S.
    All in float64: in float32 exp underflows early in training and many images tie. ``reference``
    replaces the set's own maxima (scoring new images with a saved model).
    """
    total = None
    level_max = []
    for i, ll in enumerate(level_ll):
        ll64 = torch.as_tensor(np.asarray(ll, dtype=np.float64))
        peak = float(ll64.max()) if reference is None else reference.level_max[i]
        level_max.append(peak)
        prob = torch.exp(ll64 - peak)
        up = F.interpolate(prob[:, None], size=size, mode="bilinear", align_corners=True)[:, 0]
        total = up if total is None else total + up
    sum_max = float(total.max()) if reference is None else reference.sum_max
    maps = (sum_max - total).numpy()
    image_scores = maps.reshape(len(maps), -1).max(axis=1)
    top_ties = int(np.sum(image_scores == image_scores.max()))
    used = ScoreReference(tuple(level_max), sum_max)
    return Scores(
        maps=maps, image_scores=image_scores, top_ties=top_ties, level_ll=list(level_ll), reference=used
    )
