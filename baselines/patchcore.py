"""PatchCore (Roth et al., CVPR 2022) on the suite's cached backbone features: a reference baseline.

Trained on normal images only (no known anomalies), scored on the cell's reduced test set like
every other method. What it does, and the choices made for our three-level backbones:

* **Levels.** PatchCore uses the two middle stages of its backbone (WideResNet-50 layer2 and
  layer3, strides 8 and 16). Our levels sit at strides 4/8/16, so the default is levels 1 and 2
  (strides 8 and 16; Lite0: 40 + 112 = 152 channels).
* **Locally aware patch features.** Each level is 3×3 average-pooled (stride 1, padding 1, zero
  padding counted as in ``torch.nn.AvgPool2d``), the coarser level is resized bilinearly
  (``align_corners=False``) onto the finer grid and the two are concatenated per position.
* **Memory bank → coreset.** All training patches form the bank; a greedy k-center coreset of
  ``⌊ratio·N⌋`` patches (default ratio 0.1) is chosen on a seeded sparse random projection of the
  features to 128 dimensions (Achlioptas/Li density 1/√D, as scikit-learn's ``'auto'``). The first
  coreset point is drawn at random from the seed; each next one is the bank point farthest from
  the coreset so far. One matrix-vector product per selected point updates the min-distance vector
  of the whole bank (see :func:`greedy_coreset`; ``benchmarks/coreset.py`` compares it with a naive
  loop).
* **Scores.** Patch score = Euclidean distance (full feature space) to the nearest coreset patch
  (``torch.cdist`` in chunks). Image score = max patch score on the patch grid, before upsampling;
  ``patchcore_reweight=True`` applies the paper's Eq. 7 re-weighting over ``patchcore_neighbors`` (9) coreset
  neighbours, as anomalib does by default. Map = patch grid upsampled bilinearly to the input size,
  then Gaussian-smoothed with σ = 4 per image. Maps and image scores are float64.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from bgad.baselines._common import OneShotDetector, make_scores, resize_levels

from bgad.scoring import Scores

DEFAULT_LEVELS = (1, 2)


def sparse_random_projection(in_dim: int, out_dim: int, generator: torch.Generator) -> torch.Tensor:
    """A dense (in_dim, out_dim) matrix with the sparse random projection's distribution.

    Entries are ±√(1/density)/√out_dim with probability density/2 each and 0 otherwise, density =
    1/√in_dim (scikit-learn's ``SparseRandomProjection(density='auto')``); distances are preserved
    in expectation. Drawn from ``generator`` only, so it is a function of the seed.
    """
    density = 1.0 / math.sqrt(in_dim)
    keep = torch.rand(in_dim, out_dim, generator=generator) < density
    sign = torch.where(torch.rand(in_dim, out_dim, generator=generator) < 0.5, -1.0, 1.0)
    return keep * sign * (math.sqrt(1.0 / density) / math.sqrt(out_dim))


def greedy_coreset(features: torch.Tensor, n_select: int, start: int, batch: int = 1) -> torch.Tensor:
    """Greedy k-center selection: indices (n_select,) of the rows of ``features`` (N, D).

    The first index is ``start``; each next one is the row with the largest distance to its nearest
    selected row (the first such row on ties). The min-distance vector of the whole bank is updated
    with one matrix product per step (‖x‖² − 2x·c + ‖c‖², squared norms computed once); selected rows
    get −∞ so they are never chosen again, even among duplicates. Runs on the tensor's device and in
    its dtype, without a host synchronisation per step.

    ``batch = b > 1`` is the approximate variant: each step takes the b farthest rows at once and
    updates the distances with one (N, D) × (D, b) product, so the bank is read n_select / b times
    instead of n_select times (the exact rule on a large bank is bound by reading memory; the
    batched one by arithmetic, hence a gain of a few times, not b: reports/performance.md).
    ``b = 1`` is the exact rule.
    """
    n = features.shape[0]
    if not 0 < n_select <= n:
        raise ValueError(f"cannot select {n_select} of {n} rows")
    if not 0 <= start < n:
        raise ValueError(f"start index {start} outside 0..{n - 1}")
    if batch < 1:
        raise ValueError(f"batch must be at least 1, got {batch}")
    x = features
    sq = (x * x).sum(dim=1)
    min_d = torch.full((n,), math.inf, dtype=x.dtype, device=x.device)
    selected = torch.empty(n_select, dtype=torch.long, device=x.device)
    idx = torch.tensor([start], dtype=torch.long, device=x.device)
    filled = 0
    while True:
        selected[filled : filled + len(idx)] = idx
        filled += len(idx)
        if filled == n_select:
            return selected
        centers = x.index_select(0, idx)  # (b, D)
        if len(idx) == 1:  # the exact rule: a matrix-vector product, as it always was
            dist = sq - 2.0 * (x @ centers[0]) + sq.index_select(0, idx)
        else:  # min over the b centers of ‖c‖² − 2x·c, in one fused product, then + ‖x‖²
            dist = torch.addmm(sq.index_select(0, idx)[None, :], x, centers.T, alpha=-2.0).amin(dim=1) + sq
        torch.minimum(min_d, dist, out=min_d)
        min_d.index_fill_(0, idx, -math.inf)
        take = min(batch, n_select - filled)
        idx = torch.argmax(min_d).reshape(1) if take == 1 else torch.topk(min_d, take, sorted=True).indices


@dataclass(eq=False, kw_only=True)
class PatchCore(OneShotDetector):
    """PatchCore detector (see the module docstring); parameters are ``PatchCoreParams``'."""

    coreset_ratio: float = 0.1
    coreset_projection_dim: int = 128
    coreset_pool: float = 0.0
    coreset_batch: int = 1
    patchcore_reweight: bool = False
    patchcore_neighbors: int = 9

    #: How it computes, not settings: the backbone levels used, the dtype of the greedy selection,
    #: and the distance-matrix elements per chunk when scoring.
    levels: ClassVar[tuple[int, ...]] = DEFAULT_LEVELS
    coreset_dtype: ClassVar[torch.dtype] = torch.float32
    chunk_elements: ClassVar[int] = 1 << 24

    def _check(self, feature_shapes: list[tuple[int, ...]]) -> None:
        """Refuse a ratio outside (0, 1] or levels the backbone lacks; the patch feature size."""
        if not 0 < self.coreset_ratio <= 1:
            raise ValueError(f"coreset_ratio must be in (0, 1], got {self.coreset_ratio}")
        if not self.levels or any(not 0 <= lvl < len(feature_shapes) for lvl in self.levels):
            raise ValueError(
                f"PatchCore levels {self.levels} do not fit a backbone with {len(feature_shapes)} levels"
            )
        self.feature_dim_ = sum(int(feature_shapes[lvl][0]) for lvl in self.levels)

    # --- features ---------------------------------------------------------------------------------

    def embed(self, feats: list[torch.Tensor]) -> torch.Tensor:
        """Locally aware patch features (N, D, h, w) on the grid of the finest chosen level."""
        chosen = [F.avg_pool2d(feats[lvl].float(), 3, stride=1, padding=1) for lvl in self.levels]
        grid = max((f.shape[-2:] for f in chosen), key=lambda s: s[0] * s[1])
        return torch.cat(resize_levels(chosen, tuple(grid), mode="bilinear"), dim=1)

    # --- training ---------------------------------------------------------------------------------

    def _fit_normal(self, feats: list[torch.Tensor]) -> None:
        """The memory bank of every normal patch, reduced to its greedy coreset."""
        self._check([tuple(f.shape[1:]) for f in feats])
        start = time.perf_counter()
        emb = self.embed(feats)
        bank = emb.permute(0, 2, 3, 1).reshape(-1, emb.shape[1]).contiguous().to(self.device)
        self.timings_["memory_bank"] += time.perf_counter() - start
        start = time.perf_counter()
        indices, proj_dim = self._coreset(bank)
        self.coreset_indices_ = indices
        self.memory_bank_ = bank.index_select(0, indices).contiguous()
        self.timings_["coreset_selection"] += time.perf_counter() - start
        self.counters_["memory_bank_patches"] = bank.shape[0]
        self.counters_["coreset_size"] = int(len(indices))
        self.counters_["feature_dim"] = int(bank.shape[1])
        self.counters_["projection_dim"] = int(proj_dim)

    def _coreset(self, bank: torch.Tensor) -> tuple[torch.Tensor, int]:
        """Indices of the coreset in ``bank`` (seeded), and the dimension the selection ran in."""
        n = bank.shape[0]
        n_select = max(1, int(n * self.coreset_ratio))
        generator = torch.Generator().manual_seed(self.seed)
        first = int(torch.randint(n, (1,), generator=generator))
        if n_select >= n:
            return torch.arange(n, device=self.device), bank.shape[1]
        if bank.shape[1] > self.coreset_projection_dim:
            proj = sparse_random_projection(bank.shape[1], self.coreset_projection_dim, generator)
            projected = bank @ proj.to(self.device, bank.dtype)
        else:  # nothing to reduce: select on the features themselves
            projected = bank
        pool = self._pool(n, n_select, generator)
        candidates = projected if pool is None else projected.index_select(0, pool)
        first_pick = first if pool is None else 0  # the pool is already a random draw
        indices = greedy_coreset(candidates.to(self.coreset_dtype), n_select, first_pick, self.coreset_batch)
        if pool is not None:
            indices = pool.index_select(0, indices)
        self.counters_["coreset_pool"] = n if pool is None else int(len(pool))
        return indices, projected.shape[1]

    def _pool(self, n: int, n_select: int, generator: torch.Generator) -> torch.Tensor | None:
        """A seeded random subset of the bank for the greedy selection, or None (exact: the whole bank).

        The greedy step reads every candidate once per selected patch, so its cost is candidates ×
        selections; a pool of ``coreset_pool`` × the coreset size bounds it.
        """
        if self.coreset_pool <= 0:
            return None
        size = min(n, max(n_select, int(self.coreset_pool * n_select)))
        if size >= n:
            return None
        return torch.randperm(n, generator=generator)[:size].sort().values.to(self.device)

    # --- persistence ------------------------------------------------------------------------------

    def model_state(self) -> dict:
        """The coreset memory bank (and which patches it kept)."""
        return {"memory_bank": self.memory_bank_, "coreset_indices": self.coreset_indices_}

    def _load(self, state: dict, feature_shapes: list[tuple[int, ...]]) -> None:
        self._check(feature_shapes)
        self.memory_bank_ = state["memory_bank"].to(self.device)
        self.coreset_indices_ = state["coreset_indices"]

    # --- scoring ----------------------------------------------------------------------------------

    @torch.no_grad()
    def nearest(self, patches: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Distance to, and index of, the nearest coreset patch for each row of ``patches`` (M, D)."""
        if not hasattr(self, "memory_bank_"):
            raise RuntimeError("PatchCore.score called before fit")
        bank = self.memory_bank_
        rows = max(1, self.chunk_elements // max(1, len(bank)))
        dists, idxs = [], []
        for s in range(0, len(patches), rows):
            d = torch.cdist(patches[s : s + rows].to(self.device, bank.dtype), bank)
            value, index = d.min(dim=1)
            dists.append(value)
            idxs.append(index)
        return torch.cat(dists), torch.cat(idxs)

    def _reweighted(self, emb_flat: torch.Tensor, dist: torch.Tensor, nn_idx: torch.Tensor) -> torch.Tensor:
        """Eq. 7 of the paper: s* · (1 − softmax over the neighbours of m* of their distances)[m*]."""
        bank = self.memory_bank_
        top = dist.argmax(dim=1)
        rows = torch.arange(len(dist), device=dist.device)
        score = dist[rows, top]
        m_test = emb_flat[rows.cpu(), top.cpu()].to(self.device, bank.dtype)
        m_star = bank[nn_idx[rows, top]]
        b = min(self.patchcore_neighbors, len(bank))
        support = torch.cdist(m_star, bank).topk(b, dim=1, largest=False).indices  # first = m* itself
        d = torch.linalg.vector_norm(bank[support] - m_test[:, None], dim=-1)
        weight = 1.0 - torch.softmax(d, dim=1)[:, 0]
        return weight * score

    @torch.no_grad()
    def score(self, feats: list[torch.Tensor], size: tuple[int, int]) -> Scores:
        start = time.perf_counter()
        emb = self.embed(feats)
        n, dim, h, w = emb.shape
        flat = emb.permute(0, 2, 3, 1).reshape(n, h * w, dim)
        dist, nn_idx = self.nearest(flat.reshape(-1, dim))
        dist = dist.reshape(n, h * w).double()
        nn_idx = nn_idx.reshape(n, h * w)
        self.timings_["score_nearest_neighbour"] += time.perf_counter() - start
        start = time.perf_counter()
        if self.patchcore_reweight:
            image_scores = self._reweighted(flat, dist, nn_idx)
        else:
            image_scores = dist.max(dim=1).values
        maps = self.smoothed_maps(dist.reshape(n, h, w).cpu(), size)
        self.timings_["score_maps"] += time.perf_counter() - start
        return make_scores(maps, image_scores.double().cpu().numpy().astype(np.float64))
