"""Tests for bgad.features.FeatureCache (disk round trip, hits, damaged entries) and for two helpers of
bgad.flow_detector: the learning-rate schedule and the nearest-neighbour mask downsampling (docs/method.md §3)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from bgad.backbones import create_backbone
from bgad.bench.config import RunConfig
from bgad.features import FeatureCache, resize_image, resize_mask, to_tensor
from bgad.flow_detector import downsample_masks, learning_rate


class FakeExtractor:
    """Deterministic stand-in for FeatureExtractor: three 'levels' of pooled pixels at strides 4, 8, 16."""

    def __init__(self, sha: str = "abc123", random: bool = False) -> None:
        self.mean = torch.zeros(1, 3, 1, 1)  # FeatureCache reads the extractor's device from this buffer
        self.calls = 0
        self.images_seen = 0
        self.sha = sha
        self.random = random

    def describe(self) -> dict:
        return {
            "timm_name": "fake",
            "stage_indices": [1, 2, 3],
            "weights": {"sha256": self.sha, "tag": "fake-tag", "random": self.random},
        }

    def __call__(self, images: torch.Tensor) -> list[torch.Tensor]:
        self.calls += 1
        self.images_seen += len(images)
        return [F.avg_pool2d(images, s) * (i + 1) + 0.25 for i, s in enumerate((4, 8, 16))]


@pytest.fixture
def images(tmp_path: Path) -> list[Path]:
    rng = np.random.default_rng(0)
    paths = []
    for i, size in enumerate([(40, 30), (64, 64), (50, 70)]):
        arr = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
        path = tmp_path / "img" / f"{i}.png"
        path.parent.mkdir(exist_ok=True)
        Image.fromarray(arr).save(path)
        paths.append(path)
    # a grey image too (becomes 3 channels)
    grey = tmp_path / "img" / "grey.png"
    Image.fromarray(rng.integers(0, 256, (32, 32), dtype=np.uint8), mode="L").save(grey)
    paths.append(grey)
    return paths


def _expected(paths: list[Path], size: int) -> list[torch.Tensor]:
    """What the fake extractor gives on the squash-resized images, computed without the cache."""
    from bgad.data.images import read_image

    batch = to_tensor([resize_image(read_image(p), size) for p in paths])
    return FakeExtractor()(batch)


# --------------------------------------------------------------------------------------------------
# FeatureCache


def test_features_without_disk_cache(images: list[Path]) -> None:
    ext = FakeExtractor()
    cache = FeatureCache(ext, input_size=32, root=None, batch_size=3)
    feats = cache.features(images)
    assert [f.shape for f in feats] == [(4, 3, 8, 8), (4, 3, 4, 4), (4, 3, 2, 2)]
    for f, e in zip(feats, _expected(images, 32), strict=True):
        assert torch.equal(f, e)
    assert (cache.hits, cache.misses) == (0, 4)
    assert ext.calls == 2  # batches of 3 + 1


def test_disk_cache_round_trip_and_hits(images: list[Path], tmp_path: Path) -> None:
    root = tmp_path / "cache"
    first = FeatureCache(FakeExtractor(), input_size=32, root=root)
    a = first.features(images)
    assert (first.hits, first.misses) == (0, 4)
    stored = sorted(root.rglob("*.pt"))
    assert len(stored) == 4
    assert not list(root.rglob("*.tmp"))

    ext = FakeExtractor()
    second = FeatureCache(ext, input_size=32, root=root)
    progress: list[int] = []
    b = second.features(images, advance=progress.append)
    assert (second.hits, second.misses) == (4, 0)
    assert ext.calls == 0  # nothing recomputed
    assert sum(progress) == 4
    for x, y in zip(a, b, strict=True):
        assert x.dtype == y.dtype == torch.float32
        assert torch.equal(x, y)
    # identical to the uncached path too
    for x, y in zip(b, FeatureCache(FakeExtractor(), 32).features(images), strict=True):
        assert torch.equal(x, y)
    # same cache object again: hits accumulate
    second.features(images[:2])
    assert second.hits == 6


def test_damaged_cache_file_is_recomputed(images: list[Path], tmp_path: Path) -> None:
    root = tmp_path / "cache"
    reference = FeatureCache(FakeExtractor(), input_size=32, root=root).features(images)
    victim = sorted(root.rglob("*.pt"))[0]
    victim.write_bytes(b"\x00garbage" * 10)
    ext = FakeExtractor()
    cache = FeatureCache(ext, input_size=32, root=root)
    feats = cache.features(images)
    assert (cache.hits, cache.misses) == (3, 1)
    assert ext.images_seen == 1
    for x, y in zip(reference, feats, strict=True):
        assert torch.equal(x, y)
    # the entry was rewritten and is good again
    torch.load(victim, weights_only=True)
    again = FeatureCache(FakeExtractor(), input_size=32, root=root)
    again.features(images)
    assert again.hits == 4


def test_truncated_cache_file_is_recomputed(images: list[Path], tmp_path: Path) -> None:
    root = tmp_path / "cache"
    FeatureCache(FakeExtractor(), input_size=32, root=root).features(images)
    victim = sorted(root.rglob("*.pt"))[-1]
    victim.write_bytes(victim.read_bytes()[:50])
    cache = FeatureCache(FakeExtractor(), input_size=32, root=root)
    cache.features(images)
    assert (cache.hits, cache.misses) == (3, 1)


def test_cache_key_separates_settings(images: list[Path], tmp_path: Path) -> None:
    root = tmp_path / "cache"
    keys = {
        FeatureCache(FakeExtractor(), 32, root).key,
        FeatureCache(FakeExtractor(sha="other"), 32, root).key,
        FeatureCache(FakeExtractor(), 64, root).key,
        FeatureCache(FakeExtractor(), 32, root, dtype=torch.float16).key,
    }
    assert len(keys) == 4
    assert FeatureCache(FakeExtractor(), 32, root).key == FeatureCache(FakeExtractor(), 32, root).key
    # random weights are never shared across extractor instances
    r1, r2 = FakeExtractor(random=True), FakeExtractor(random=True)
    assert FeatureCache(r1, 32, root).key != FeatureCache(r2, 32, root).key
    # a change of input size does not hit the other size's entries
    FeatureCache(FakeExtractor(), 32, root).features(images)
    other = FeatureCache(FakeExtractor(), 64, root)
    other.features(images)
    assert (other.hits, other.misses) == (0, 4)


def test_float16_cache_returns_float32(images: list[Path], tmp_path: Path) -> None:
    root = tmp_path / "cache"
    cold = FeatureCache(FakeExtractor(), 32, root, dtype=torch.float16).features(images)
    warm = FeatureCache(FakeExtractor(), 32, root, dtype=torch.float16).features(images)
    for c, w, e in zip(cold, warm, _expected(images, 32), strict=True):
        assert c.dtype == w.dtype == torch.float32
        assert torch.equal(c, w)  # cold and warm runs agree exactly
        torch.testing.assert_close(c, e, atol=2e-3, rtol=1e-3)


def test_real_lite0_disk_cache_round_trip(images: list[Path], tmp_path: Path) -> None:
    ext = create_backbone("tf_efficientnet_lite0")
    root = tmp_path / "cache"
    first = FeatureCache(ext, 64, root)
    a = first.features(images[:3])
    assert [tuple(f.shape) for f in a] == [(3, 24, 16, 16), (3, 40, 8, 8), (3, 112, 4, 4)]
    second = FeatureCache(ext, 64, root)
    b = second.features(images[:3])
    assert second.hits == 3 and second.misses == 0
    for x, y in zip(a, b, strict=True):
        assert torch.equal(x, y)


def test_resize_helpers() -> None:
    img = np.zeros((10, 20, 3), dtype=np.uint8)
    assert resize_image(img, 16).shape == (16, 16, 3)  # squash, no crop
    mask = np.zeros((10, 20), dtype=np.uint8)
    mask[2:5, 3:9] = 1
    out = resize_mask(mask, 16)
    assert out.shape == (16, 16) and set(np.unique(out)) <= {0, 1}
    t = to_tensor([np.full((2, 2, 3), 255, dtype=np.uint8)])
    assert t.shape == (1, 3, 2, 2) and t.dtype == torch.float32 and torch.all(t == 1.0)


# --------------------------------------------------------------------------------------------------
# learning rate (bgad.flow_detector.learning_rate)


@pytest.fixture
def cfg() -> RunConfig:
    return RunConfig.of()  # lr 2e-4, 25 meta-epochs, 2 warm-up epochs from lr/10, cosine to lr·1e-3


def _cosine(cfg: RunConfig, epoch: float) -> float:
    eta_min = cfg.lr * cfg.lr_min_factor
    return eta_min + (cfg.lr - eta_min) * (1 + math.cos(math.pi * epoch / cfg.meta_epochs)) / 2


def test_warmup_starts_at_a_tenth(cfg: RunConfig) -> None:
    assert learning_rate(cfg, 0, 0.0) == pytest.approx(cfg.lr * 0.1, rel=1e-12)


def test_warmup_reaches_cosine_value_at_its_end(cfg: RunConfig) -> None:
    end = _cosine(cfg, cfg.warmup_epochs)
    assert learning_rate(cfg, cfg.warmup_epochs - 1, 1.0 - 1e-9) == pytest.approx(end, rel=1e-8)
    assert learning_rate(cfg, cfg.warmup_epochs, 0.0) == pytest.approx(end, rel=1e-12)
    # halfway through the warm-up: linear in iterations
    mid = learning_rate(cfg, 1, 0.0)
    assert mid == pytest.approx((cfg.lr * 0.1 + end) / 2, rel=1e-12)
    assert learning_rate(cfg, 0, 0.5) == pytest.approx(cfg.lr * 0.1 + 0.25 * (end - cfg.lr * 0.1), rel=1e-12)


def test_warmup_is_increasing_and_cosine_is_decreasing(cfg: RunConfig) -> None:
    warm = [learning_rate(cfg, m, p) for m in range(cfg.warmup_epochs) for p in np.linspace(0, 0.99, 20)]
    assert all(b > a for a, b in zip(warm, warm[1:], strict=False))
    after = [
        learning_rate(cfg, m, p) for m in range(cfg.warmup_epochs, cfg.meta_epochs) for p in (0.0, 0.5, 0.9)
    ]
    assert all(b <= a for a, b in zip(after, after[1:], strict=False))
    assert learning_rate(cfg, 10, 0.0) == pytest.approx(_cosine(cfg, 10), rel=1e-12)


def test_decays_towards_lr_min(cfg: RunConfig) -> None:
    eta_min = cfg.lr * 1e-3
    last = learning_rate(cfg, cfg.meta_epochs - 1, 0.99)
    assert last == pytest.approx(_cosine(cfg, cfg.meta_epochs - 1), rel=1e-12)
    assert eta_min < last < eta_min + 0.01 * cfg.lr  # close to, but above, the floor
    assert learning_rate(cfg, cfg.meta_epochs, 0.0) == pytest.approx(eta_min, rel=1e-12)
    assert min(learning_rate(cfg, m, 0.0) for m in range(cfg.meta_epochs)) > eta_min


def test_no_warmup() -> None:
    cfg = RunConfig.of(warmup_epochs=0, meta_epochs=4)
    assert learning_rate(cfg, 0, 0.0) == pytest.approx(cfg.lr, rel=1e-12)
    assert learning_rate(cfg, 2, 0.3) == pytest.approx(_cosine(cfg, 2), rel=1e-12)


# --------------------------------------------------------------------------------------------------
# mask downsampling (bgad.flow_detector.downsample_masks)


def test_downsample_masks_is_nearest_by_stride() -> None:
    gen = torch.Generator().manual_seed(0)
    masks = (torch.rand(3, 64, 64, generator=gen) > 0.7).to(torch.uint8)
    out = downsample_masks(masks, (16, 16))
    assert out.shape == (3, 16, 16) and out.dtype == torch.uint8
    assert torch.equal(out, masks[:, ::4, ::4])


def test_downsample_masks_non_integer_ratio() -> None:
    gen = torch.Generator().manual_seed(1)
    masks = (torch.rand(2, 10, 10, generator=gen) > 0.5).to(torch.uint8)
    out = downsample_masks(masks, (4, 4))
    idx = [math.floor(i * 10 / 4) for i in range(4)]  # 0, 2, 5, 7
    assert torch.equal(out, masks[:, idx][:, :, idx])


def test_downsample_masks_is_not_max_pooling() -> None:
    """A single anomalous pixel off the sampling grid disappears (nearest, not any/max)."""
    masks = torch.zeros(1, 8, 8, dtype=torch.uint8)
    masks[0, 1, 1] = 1
    assert downsample_masks(masks, (2, 2)).sum() == 0
    masks[0, 4, 0] = 1
    out = downsample_masks(masks, (2, 2))
    assert out.tolist() == [[[0, 0], [1, 0]]]


@pytest.mark.parametrize(
    ("sub_epochs", "minimum", "n_normal", "passes"),
    [(8, 0, 40, 8), (1, 500, 73, 7), (1, 500, 500, 1), (1, 500, 1692, 1), (3, 100, 10, 10), (3, 100, 200, 3)],
)
def test_meta_epochs_see_at_least_the_minimum_of_images(
    sub_epochs: int, minimum: int, n_normal: int, passes: int
) -> None:
    from bgad.flow_detector import sub_epochs_per_meta_epoch

    cfg = RunConfig.of(sub_epochs=sub_epochs, min_images_per_meta_epoch=minimum)
    assert sub_epochs_per_meta_epoch(cfg, n_normal) == passes
