"""Pieces shared by the nearest-neighbour / Gaussian reference baselines (PatchCore, PaDiM).

These methods are not flows: they fit statistics of normal features once and score by a distance.
``OneShotDetector`` is their common scaffolding; their parameters are their method's typed settings
(the suite's ``PatchCoreParams``, ``PaDiMParams``), passed to the constructor by name.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy.ndimage import gaussian_filter

from bgad.flow_detector import Detector, FitHooks, TrainingData
from bgad.scoring import Scores


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


@dataclass(eq=False, kw_only=True)
class OneShotDetector(Detector):
    """A detector fitted in one pass over the normal images' features, its maps smoothed with
    ``smoothing_sigma`` (σ in pixels). Subclasses add ``_fit_normal`` and the distance they score by.
    """

    smoothing_sigma: float = 4.0

    def _fit(self, data: TrainingData, hooks: FitHooks) -> None:
        """Fit on the normal features; reported to the runner as one finished (and evaluated) epoch."""
        if len(data.normal_features[0]) < 1:
            raise ValueError(f"{type(self).__name__} needs at least one normal training image")
        self._fit_normal(data.normal_features)
        hooks.on_sub_epoch(0, 0)
        hooks.after_meta_epoch(0)

    def _fit_normal(self, feats: list[torch.Tensor]) -> None:
        raise NotImplementedError

    def smoothed_maps(self, grid_scores: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
        """(N,h,w) float64 scores on the CPU → (N,H,W) maps: upsampled bilinearly, then smoothed."""
        return smooth_maps(upsample_maps(grid_scores, size).numpy(), self.smoothing_sigma)
