"""Pieces shared by the nearest-neighbour / Gaussian reference baselines (PatchCore, PaDiM).

These methods are not flows: they fit statistics of normal features once and score by a distance.
Their parameters are their method's typed settings (``bgad.bench.params``), read from the cell's config.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from scipy.ndimage import gaussian_filter

from bgad.scoring import Scores


def report_one_shot_fit(
    after_meta_epoch: Callable[[int], None] | None, on_sub_epoch: Callable[[int, int], None] | None
) -> None:
    """These methods fit in one pass: report it to the runner as one finished (and evaluated) epoch."""
    if on_sub_epoch:
        on_sub_epoch(0, 0)
    if after_meta_epoch:
        after_meta_epoch(0)


def level_channels(feature_shapes: Sequence[int | Sequence[int]]) -> tuple[int, ...]:
    """Channels per level from the runner's ``(channels, height, width)`` per level (or bare channels)."""
    return tuple(int(s) if isinstance(s, int) else int(s[0]) for s in feature_shapes)


def resize_levels(
    feats: list[torch.Tensor], size: tuple[int, int], mode: str = "bilinear"
) -> list[torch.Tensor]:
    """Resize per-level (N,C,h,w) maps onto one (h,w) grid (``align_corners=False``, as both papers' code)."""
    out = []
    for f in feats:
        if tuple(f.shape[-2:]) == tuple(size):
            out.append(f)
        elif mode == "nearest":
            out.append(F.interpolate(f, size=size, mode="nearest"))
        else:
            out.append(F.interpolate(f, size=size, mode=mode, align_corners=False))
    return out


def upsample_maps(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(N,h,w) score grids -> (N,H,W) by bilinear interpolation (``align_corners=False``)."""
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps
    return F.interpolate(maps[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]


def smooth_maps(maps: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian smoothing of each (H,W) map of an (N,H,W) stack (never across images); σ=0: unchanged.

    ``scipy.ndimage.gaussian_filter`` with ``mode='reflect'`` and ``truncate=4`` (kernel radius 4σ),
    as PatchCore's and PaDiM's reference code; anomalib's ``GaussianBlur2d`` uses the same radius.
    """
    maps = np.asarray(maps, dtype=np.float64)
    if sigma <= 0:
        return maps
    return gaussian_filter(maps, sigma=(0.0, sigma, sigma), mode="reflect", truncate=4.0)


def make_scores(maps: np.ndarray, image_scores: np.ndarray | None = None) -> Scores:
    """``Scores`` from float64 (N,H,W) maps; image score = max of the map unless given."""
    maps = np.ascontiguousarray(maps, dtype=np.float64)
    if image_scores is None:
        image_scores = maps.reshape(len(maps), -1).max(axis=1)
    image_scores = np.asarray(image_scores, dtype=np.float64)
    top_ties = int(np.sum(image_scores == image_scores.max())) if len(image_scores) else 0
    return Scores(maps=maps, image_scores=image_scores, top_ties=top_ties, level_ll=None)
