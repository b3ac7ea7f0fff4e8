"""PaDiM (Defard et al., ICPR 2021) on the suite's cached backbone features: a reference baseline.

Trained on normal images only, scored on the cell's reduced test set like every other method.

* **Embedding.** All three levels, each resized onto the finest level's grid with nearest-neighbour
  interpolation (the reference code's ``embedding_concat`` and anomalib both replicate coarse cells),
  concatenated, then a seeded random subset of ``padim_channels`` channels (default 100, or all channels when the
  backbone has fewer; Lite0 has 24 + 40 + 112 = 176). Only the chosen channels are resized.
* **Gaussian per position.** Mean and covariance (unbiased, N − 1) over the training images at each
  grid position, plus ``padim_ridge``·I (0.01), accumulated in two passes over image chunks in float64;
  inverse covariances are computed once at fit time.
* **Scores.** Mahalanobis distance √((x−μ)ᵀΣ⁻¹(x−μ)) per position (batched matrix products),
  the grid upsampled bilinearly (``align_corners=False``) to the input size and Gaussian-smoothed
  with σ = 4 per image; image score = max of the smoothed map. float64 throughout.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import ClassVar

import torch
from bgad.baselines._common import OneShotDetector, make_scores, resize_levels

from bgad.flow_detector import FeatureShapes
from bgad.scoring import Scores


def _batched_inverse(cov: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Inverse of a batch of small SPD matrices, and LAPACK's ``info`` per matrix.

    On the CPU the batch runs on one thread: measured on a 2-core machine with another process
    busy, ``torch.linalg.inv`` of (1024, 100, 100) float64 took 0.6–23 s with two threads and a
    steady 0.3 s with one (OpenMP over tiny LAPACK calls); results are the same.
    """
    if cov.device.type != "cpu":
        return torch.linalg.inv_ex(cov)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return torch.linalg.inv_ex(cov)
    finally:
        torch.set_num_threads(threads)


def _level_indices(indices: torch.Tensor, channels: list[int]) -> list[torch.Tensor]:
    """Per level, which of its own channels a sorted subset of the concatenated channels keeps."""
    offsets = [sum(channels[:i]) for i in range(len(channels))]
    return [indices[(indices >= o) & (indices < o + c)] - o for o, c in zip(offsets, channels, strict=True)]


@dataclass(eq=False, kw_only=True)
class PaDiM(OneShotDetector):
    """PaDiM detector (see the module docstring); parameters are ``PaDiMParams``'.

    ``padim_channels``: the random channel subset's size (0 or more than there are: all channels);
    ``padim_ridge``: added to each covariance's diagonal.
    """

    padim_channels: int = 100
    padim_ridge: float = 0.01

    #: How the statistics are computed, not settings: the reference code's nearest-neighbour resizing,
    #: float64, and images per chunk of the two passes.
    upsample_mode: ClassVar[str] = "nearest"
    dtype: ClassVar[torch.dtype] = torch.float64
    chunk_images: ClassVar[int] = 16

    def _choose_channels(self, feature_shapes: FeatureShapes) -> None:
        """The seeded random channel subset of the concatenated levels (sorted), and its share per level."""
        channels = [int(shape[0]) for shape in feature_shapes]
        total = sum(channels)
        d = min(self.padim_channels, total) if self.padim_channels > 0 else total
        generator = torch.Generator().manual_seed(self.seed)
        self.channel_indices_ = torch.randperm(total, generator=generator)[:d].sort().values
        self.level_indices_ = _level_indices(self.channel_indices_, channels)

    # --- features ---------------------------------------------------------------------------------

    def embed(self, feats: list[torch.Tensor]) -> torch.Tensor:
        """(n, P, d) embedding vectors of a chunk of images (P = positions of the finest grid)."""
        kept = [f[:, idx] for f, idx in zip(feats, self.level_indices_, strict=True) if len(idx)]
        grid = max((f.shape[-2:] for f in feats), key=lambda s: s[0] * s[1])
        emb = torch.cat(resize_levels([k.float() for k in kept], tuple(grid), mode=self.upsample_mode), 1)
        n, d, h, w = emb.shape
        # contiguous (n, P, d): batched products over positions are ~5× slower on a strided view
        return emb.reshape(n, d, h * w).permute(0, 2, 1).to(self.device, self.dtype).contiguous()

    def _chunks(self, feats: list[torch.Tensor]):
        n = len(feats[0])
        for s in range(0, n, self.chunk_images):
            yield self.embed([f[s : s + self.chunk_images] for f in feats])

    # --- training ---------------------------------------------------------------------------------

    def _fit_normal(self, feats: list[torch.Tensor]) -> None:
        """Mean and inverse covariance per position, over the chosen channels, in two passes."""
        self._choose_channels([f.shape[1:] for f in feats])
        n = len(feats[0])
        start = time.perf_counter()
        total = None
        for x in self._chunks(feats):
            total = x.sum(0) if total is None else total + x.sum(0)
        mean = total / n
        cov = None
        for x in self._chunks(feats):
            xc = (x - mean).permute(1, 0, 2).contiguous()  # (P, n, d)
            part = torch.bmm(xc.transpose(1, 2), xc)
            cov = part if cov is None else cov + part
        cov = cov / max(n - 1, 1)
        p, d = mean.shape
        cov += self.padim_ridge * torch.eye(d, dtype=cov.dtype, device=cov.device)
        self.timings_["gaussian_fit"] += time.perf_counter() - start
        start = time.perf_counter()
        inv, info = _batched_inverse(cov)
        if bool((info != 0).any()):
            raise RuntimeError(f"PaDiM: {int((info != 0).sum())} covariance matrices are singular")
        self.inv_cov_ = inv
        self.mean_ = mean
        self.grid_ = tuple(max((f.shape[-2:] for f in feats), key=lambda s: s[0] * s[1]))
        self.timings_["inverse_covariance"] += time.perf_counter() - start
        self.counters_["positions"] = int(p)
        self.counters_["embedding_dim"] = int(d)
        self.counters_["train_images"] = int(n)

    # --- scoring ----------------------------------------------------------------------------------

    @torch.no_grad()
    def mahalanobis(self, feats: list[torch.Tensor]) -> torch.Tensor:
        """Mahalanobis distance per position, (N, h, w) on the finest grid, in ``dtype`` on the CPU."""
        if not hasattr(self, "inv_cov_"):
            raise RuntimeError("PaDiM.score called before fit")
        out = []
        for x in self._chunks(feats):
            delta = (x - self.mean_).permute(1, 0, 2).contiguous()  # (P, n, d)
            m = (torch.bmm(delta, self.inv_cov_) * delta).sum(-1)  # (P, n)
            out.append(m.clamp_min(0).sqrt().T.cpu())
        return torch.cat(out).reshape(-1, *self.grid_)

    def model_state(self) -> dict:
        """The fitted Gaussians (and the channel subset they are over)."""
        return {
            "mean": self.mean_,
            "inv_cov": self.inv_cov_,
            "grid": self.grid_,
            "channels": self.channel_indices_,
        }

    def _load(self, state: dict, feature_shapes: list[tuple[int, ...]]) -> None:
        self.channel_indices_ = state["channels"]
        self.level_indices_ = _level_indices(self.channel_indices_, [shape[0] for shape in feature_shapes])
        self.mean_, self.inv_cov_, self.grid_ = state["mean"], state["inv_cov"], tuple(state["grid"])

    def score(self, feats: list[torch.Tensor], size: tuple[int, int]) -> Scores:
        start = time.perf_counter()
        dist = self.mahalanobis(feats)
        self.timings_["score_mahalanobis"] += time.perf_counter() - start
        start = time.perf_counter()
        maps = self.smoothed_maps(dist.double(), size)
        self.timings_["score_maps"] += time.perf_counter() - start
        return make_scores(maps)
