"""PatchCore: the vectorised greedy coreset equals the naive rule; projection and scoring basics."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from bgad.baselines.patchcore import PatchCore, greedy_coreset, sparse_random_projection

from bgad.flow_detector import TrainingData

_BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "coreset.py"


def _naive():
    spec = importlib.util.spec_from_file_location("bench_coreset", _BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("bench_coreset", module)
    spec.loader.exec_module(module)
    return module.naive_greedy_coreset


@pytest.mark.parametrize(("n", "dim", "k", "seed"), [(300, 16, 40, 0), (500, 8, 100, 1), (64, 3, 64, 2)])
def test_greedy_coreset_equals_naive_selection(n: int, dim: int, k: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, dim))
    start = int(rng.integers(n))
    fast = greedy_coreset(torch.from_numpy(x), k, start).tolist()
    assert fast == _naive()(x, k, start)
    assert len(set(fast)) == k and fast[0] == start


def test_greedy_coreset_never_repeats_duplicates() -> None:
    x = torch.tensor([[0.0, 0.0], [0.0, 0.0], [1.0, 0.0], [1.0, 0.0]], dtype=torch.float64)
    sel = greedy_coreset(x, 4, 0).tolist()
    assert sorted(sel) == [0, 1, 2, 3] and sel == _naive()(x.numpy(), 4, 0)


def _batched_reference(x: np.ndarray, k: int, start: int, b: int) -> list[int]:
    """The batched rule as written: after each step, the b rows farthest from everything selected."""
    selected, last = [start], [start]
    d = np.full(len(x), np.inf)
    while len(selected) < k:
        for c in last:
            d = np.minimum(d, ((x - x[c]) ** 2).sum(axis=1))
        d[selected] = -np.inf
        last = list(np.argsort(-d, kind="stable")[: min(b, k - len(selected))])
        selected += last
    return [int(i) for i in selected]


@pytest.mark.parametrize(("n", "k", "b"), [(300, 40, 4), (500, 101, 8), (64, 64, 5)])
def test_batched_greedy_coreset_equals_its_reference(n: int, k: int, b: int) -> None:
    rng = np.random.default_rng(n)
    x = rng.normal(size=(n, 6))
    fast = greedy_coreset(torch.from_numpy(x), k, 3, batch=b).tolist()
    assert fast == _batched_reference(x, k, 3, b)
    assert len(set(fast)) == k  # distinct, and exactly k even when b does not divide k - 1
    assert greedy_coreset(torch.from_numpy(x), k, 3, batch=1).tolist() == _naive()(x, k, 3)


def test_greedy_coreset_rejects_bad_sizes() -> None:
    with pytest.raises(ValueError, match="cannot select"):
        greedy_coreset(torch.zeros(3, 2), 4, 0)
    with pytest.raises(ValueError, match="start index"):
        greedy_coreset(torch.zeros(3, 2), 2, 3)
    with pytest.raises(ValueError, match="batch"):
        greedy_coreset(torch.zeros(3, 2), 2, 0, batch=0)


def test_sparse_random_projection_is_seeded_and_sparse() -> None:
    a = sparse_random_projection(400, 128, torch.Generator().manual_seed(3))
    b = sparse_random_projection(400, 128, torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and a.shape == (400, 128)
    density = (a != 0).float().mean().item()
    assert abs(density - 1 / 20) < 0.01  # 1/sqrt(400)
    values = a[a != 0].abs().unique()
    assert torch.allclose(values, torch.tensor([np.sqrt(20) / np.sqrt(128)], dtype=a.dtype))


def _feats(n: int, gen: torch.Generator) -> list[torch.Tensor]:
    return [torch.randn(n, c, s, s, generator=gen) for c, s in ((4, 16), (6, 8), (8, 4))]


def test_patchcore_scores_a_training_image_near_zero_with_the_full_bank() -> None:
    gen = torch.Generator().manual_seed(0)
    train = _feats(5, gen)
    data = TrainingData(train, None, None, None, None, "object", None)
    det = PatchCore(coreset_ratio=1.0)
    det.fit(data)
    assert det.counters_["coreset_size"] == det.counters_["memory_bank_patches"] == 5 * 8 * 8
    scores = det.score([f[:2] for f in train], (32, 32))
    assert scores.image_scores.max() < 1e-2
    other = det.score(_feats(2, gen), (32, 32))
    assert (other.image_scores > scores.image_scores.max()).all()
    # patch grid of the finer chosen level (strides 8 → 8×8 here), smoothed map at the asked size
    assert other.maps.shape == (2, 32, 32)


def test_patchcore_reweighting_changes_only_the_image_scores() -> None:
    gen = torch.Generator().manual_seed(1)
    data = TrainingData(_feats(6, gen), None, None, None, None, "object", None)
    test = _feats(3, gen)
    plain = PatchCore(coreset_ratio=0.3).fit(data).score(test, (16, 16))
    rew = PatchCore(coreset_ratio=0.3, patchcore_reweight=True).fit(data).score(test, (16, 16))
    np.testing.assert_array_equal(plain.maps, rew.maps)
    assert (rew.image_scores <= plain.image_scores).all() and (rew.image_scores > 0).all()


def test_a_coreset_pool_bounds_the_selection_and_a_large_one_is_exact() -> None:
    gen = torch.Generator().manual_seed(2)
    data = TrainingData(_feats(8, gen), None, None, None, None, "object", None)

    def fitted(pool: float) -> PatchCore:
        return PatchCore(coreset_ratio=0.1, coreset_pool=pool).fit(data)

    exact, huge, pooled = fitted(0.0), fitted(1000.0), fitted(3.0)
    assert torch.equal(exact.coreset_indices_, huge.coreset_indices_)  # a pool as large as the bank = exact
    n_select = exact.counters_["coreset_size"]
    assert pooled.counters_["coreset_size"] == n_select  # the same memory-bank size …
    assert pooled.counters_["coreset_pool"] == 3 * n_select  # … chosen among 3× as many candidates
    assert len(set(pooled.coreset_indices_.tolist())) == n_select
    for fit in (
        exact,
        pooled,
    ):  # the selection's wall time is a duration, not a difference of unrelated clocks
        assert 0 <= fit.timings_["coreset_selection"] < 60


def test_patchcore_refuses_levels_the_backbone_lacks_when_fitting() -> None:
    two_levels = [torch.randn(2, c, s, s) for c, s in ((4, 16), (6, 8))]
    with pytest.raises(ValueError, match="do not fit a backbone with 2 levels"):
        PatchCore().fit(TrainingData(two_levels, None, None, None, None, "object", None))
