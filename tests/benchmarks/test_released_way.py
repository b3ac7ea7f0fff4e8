"""The speed benchmark's emulation of the released code (benchmarks/released_way.py): its encoder is
timm's ``features_only`` model with our weights, and its PRO is BGAD's own loop, which must compute
``pro_auc_paper``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from benchmarks.released_way import (
    ImageFiles,
    ReleasedBackbone,
    ReleasedEncoder,
    released_bgad_pro,
)
from bgad.backbones import create_backbone
from bgad.bench.config import RunConfig
from bgad.bench.method_registry import METHODS
from bgad.features import FeatureCache
from bgad.flow_detector import TrainingData
from bgad.metrics import pro_auc_paper


def test_released_encoder_keeps_every_stage_and_gives_our_features() -> None:
    cfg = RunConfig.of(backbone="tf_efficientnet_lite0", random_weights=True, input_size=64)
    torch.manual_seed(0)
    encoder = ReleasedEncoder(cfg)
    torch.manual_seed(0)
    plain = create_backbone(cfg.backbone, random_weights=True, channels_last=False, fold_bn=False)
    assert len(encoder.model.blocks) > len(plain.model.blocks)  # the unused stages are still there
    images = torch.rand(2, 3, 64, 64)
    ours, released = plain(images), encoder(images)
    assert [f.shape for f in released] == [f.shape for f in ours]
    for a, b in zip(ours, released, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


def _blobs(n: int = 6, size: int = 48, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Masks with one or two filled discs (no holes) and smooth maps brighter near the defects."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    masks = np.zeros((n, size, size), np.uint8)
    for i in range(n // 2):
        for _ in range(rng.integers(1, 3)):
            cy, cx, r = rng.integers(8, size - 8, 2).tolist() + [int(rng.integers(3, 7))]
            masks[i][(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = 1
    maps = rng.normal(0, 1, masks.shape) + 2.0 * masks
    return masks, maps


def test_bgad_loop_computes_pro_paper() -> None:
    masks, maps = _blobs()
    value = released_bgad_pro(masks, maps)["value"]
    assert 0.0 < value < 1.0
    assert value == pytest.approx(pro_auc_paper(masks, maps), abs=1e-6)


def test_bgad_loop_counts_predictions_in_a_region_hole() -> None:
    size = 32
    masks = np.zeros((2, size, size), np.uint8)
    masks[0, 8:24, 8:24] = 1
    masks[0, 12:20, 12:20] = 0  # a ring: its hole is normal ground truth
    maps = np.zeros((2, size, size))
    maps[0, 12:20, 12:20] = 1.0  # only the hole is predicted
    maps[1] = np.linspace(0, 0.5, size * size).reshape(size, size)
    value = released_bgad_pro(masks, maps)["value"]
    assert value > 0.0  # no ring pixel is ever predicted, but the hole-filled region is
    assert value == pytest.approx(pro_auc_paper(masks, maps), abs=1e-6)


def test_bgad_loop_timed_on_a_subset_returns_no_value() -> None:
    masks, maps = _blobs()
    out = released_bgad_pro(masks, maps, n_timed=7)
    assert out["extrapolated"] and out["value"] is None and out["n_timed"] == 7
    assert out["seconds"] >= out["seconds_timed"] > 0


def test_released_way_trains_with_the_flow_detectors_own_loop(tmp_path: Path) -> None:
    """The released way feeds features computed per batch (``BatchFeatures``) to the flow detector's
    own ``fit``: the same schedule (sub-epochs raised by ``min_images_per_meta_epoch``), pools, RACP
    samples and steps as from cached features, so the same counters and, up to the backbone's
    rounding in other batches, the same flows."""
    rng = np.random.default_rng(0)
    paths = []
    for i in range(5):
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(paths[-1])
    normals, anomalies = paths[:4], paths[4:]
    masks = np.zeros((1, 32, 32), np.uint8)
    masks[0, 10:20, 10:20] = 1
    cfg = RunConfig.of(
        method="bgad", backbone="tf_efficientnet_lite0", random_weights=True, input_size=32,
        meta_epochs=2, sub_epochs=1, phase1_epochs=1, warmup_epochs=1, min_images_per_meta_epoch=8,
        batch_size=4, repeats=2, racp_per_anomaly=2,
    )  # fmt: skip
    torch.manual_seed(0)
    source = ReleasedBackbone(create_backbone(cfg.backbone, random_weights=True), 32, torch.device("cpu"))
    cache = FeatureCache(source.extractor, 32)
    cached = TrainingData(
        cache.features(normals),
        np.stack([cache.load_resized(p) for p in normals]),
        cache.features(anomalies),
        np.stack([cache.load_resized(p) for p in anomalies]),
        masks,
        "texture",
        cache.compute,
    )
    per_batch = TrainingData(
        source.levels(normals),
        ImageFiles(normals, source),
        source.levels(anomalies),
        ImageFiles(anomalies, source),
        masks,
        "texture",
        source.levels,
    )
    ours = METHODS.get("bgad").build(cfg, "cpu").fit(cached)
    released = METHODS.get("bgad").build(cfg, "cpu").fit(per_batch)
    assert released.counters_ == ours.counters_
    assert ours.counters_["sub_epochs_per_meta_epoch"] == 2 and ours.counters_["racp_samples"] > 0
    assert source.timings["batch_features"] > 0  # the backbone ran in the training batches
    test = cache.features(paths)
    for a, b in zip(ours.log_likelihoods(test), released.log_likelihoods(test), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-3)
