"""Tests for bgad.anomalies: foreground, RandAugmented CutPaste (docs/method.md §3) and the balanced sampler."""

from __future__ import annotations

import random

import numpy as np
import pytest

from bgad.anomalies import (
    RACP_TRANSFORM_FAMILIES,
    RandAugmentCutPaste,
    balanced_batches,
    foreground_mask,
    paste_anomaly,
)

SIZE = 64


def _noise_image(seed: int, size: int = SIZE) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(size, size, 3), dtype=np.uint8)


def _disc(size: int = SIZE, radius: int = 18) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    return (yy - size / 2) ** 2 + (xx - size / 2) ** 2 <= radius**2


def _object_image(bright_disc: bool = True, size: int = SIZE) -> np.ndarray:
    """A disc object on a plain background, with mild texture so Otsu sees two clear modes."""
    disc = _disc(size)
    grey = np.where(disc, 200, 30) if bright_disc else np.where(disc, 30, 200)
    grey = grey + np.random.default_rng(7).integers(-10, 11, size=grey.shape)
    return np.repeat(grey.clip(0, 255).astype(np.uint8)[..., None], 3, axis=2)


def _square_mask(top: int, left: int, side: int, size: int = SIZE) -> np.ndarray:
    mask = np.zeros((size, size), dtype=np.uint8)
    mask[top : top + side, left : left + side] = 1
    return mask


# ---------------------------------------------------------------------------------------------------------
# foreground_mask
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bright_disc", [True, False])
def test_foreground_is_the_disc_whatever_its_polarity(bright_disc: bool) -> None:
    fg = foreground_mask(_object_image(bright_disc), "object")
    assert fg.dtype == bool and fg.shape == (SIZE, SIZE)
    np.testing.assert_array_equal(fg, _disc())


def test_foreground_texture_is_everything() -> None:
    assert foreground_mask(_object_image(), "texture").all()


def test_foreground_flat_image_falls_back_to_whole_image() -> None:
    flat = np.full((SIZE, SIZE, 3), 90, dtype=np.uint8)
    assert foreground_mask(flat, "object").all()


def test_foreground_rejects_unknown_kind() -> None:
    with pytest.raises(ValueError):
        foreground_mask(_object_image(), "thing")


# ---------------------------------------------------------------------------------------------------------
# RandAugmentCutPaste
# ---------------------------------------------------------------------------------------------------------


def test_choose_transforms_three_distinct_of_ten() -> None:
    racp = RandAugmentCutPaste()
    assert len(RACP_TRANSFORM_FAMILIES) == 10
    rng = np.random.default_rng(0)
    seen: set[str] = set()
    for _ in range(50):
        names = racp.choose_transforms(rng)
        assert len(names) == 3 and len(set(names)) == 3
        assert set(names) <= set(RACP_TRANSFORM_FAMILIES)
        seen.update(names)
    assert seen == set(RACP_TRANSFORM_FAMILIES)


@pytest.mark.parametrize("family", RACP_TRANSFORM_FAMILIES)
def test_each_family_keeps_shape_dtype_and_binary_mask(family: str) -> None:
    racp = RandAugmentCutPaste()
    aug = racp.augment(
        _noise_image(1), _square_mask(20, 20, 24), np.random.default_rng(3), transforms=[family]
    )
    assert aug.image.shape == (SIZE, SIZE, 3) and aug.image.dtype == np.uint8
    assert aug.mask.shape == (SIZE, SIZE) and aug.mask.dtype == np.uint8
    assert set(np.unique(aug.mask)) <= {0, 1}
    assert aug.transforms == (family,)


def test_texture_keeps_location_and_pastes_exactly_the_augmented_pixels() -> None:
    """Texture foreground is everywhere, so the location is kept: the paste is aug.image on aug.mask."""
    racp = RandAugmentCutPaste()
    anomaly, mask, normal = _noise_image(1), _square_mask(20, 20, 20), _noise_image(2)
    for seed in range(10):
        # Replay the generator: __call__ draws augment's randomness first, then (only if moving) placement.
        aug = racp.augment(anomaly, mask, np.random.default_rng(seed))
        out = racp(anomaly, mask, normal, "texture", np.random.default_rng(seed))
        assert racp.last_transforms == aug.transforms
        if not aug.mask.any():
            assert out is None
            continue
        assert out is not None
        new_image, new_mask = out
        np.testing.assert_array_equal(new_mask, aug.mask)
        inside = new_mask.astype(bool)
        np.testing.assert_array_equal(new_image[inside], aug.image[inside])
        np.testing.assert_array_equal(new_image[~inside], normal[~inside])


def test_output_mask_binary_nonempty_and_outside_is_normal() -> None:
    racp = RandAugmentCutPaste()
    anomaly, normal = _noise_image(1), _object_image()
    for seed in range(20):
        out = racp(anomaly, _square_mask(2, 2, 12), normal, "object", np.random.default_rng(seed))
        if out is None:
            continue
        new_image, new_mask = out
        assert new_mask.dtype == np.uint8 and set(np.unique(new_mask)) == {0, 1}
        outside = new_mask == 0
        np.testing.assert_array_equal(new_image[outside], normal[outside])


def test_empty_mask_gives_none() -> None:
    racp = RandAugmentCutPaste()
    empty = np.zeros((SIZE, SIZE), dtype=np.uint8)
    assert racp(_noise_image(1), empty, _noise_image(2), "texture", np.random.default_rng(0)) is None
    fg = np.ones((SIZE, SIZE), dtype=bool)
    assert paste_anomaly(_noise_image(1), empty, _noise_image(2), fg, 2 / 3, np.random.default_rng(0)) is None


def test_same_seed_same_sample_other_seed_differs_and_no_global_rng() -> None:
    racp = RandAugmentCutPaste()
    anomaly, mask, normal = _noise_image(1), _square_mask(10, 14, 30), _object_image()
    np.random.seed(123)
    random.seed(123)
    np_state, py_state = np.random.get_state()[1].copy(), random.getstate()
    a = racp(anomaly, mask, normal, "object", np.random.default_rng(42))
    names_a = racp.last_transforms
    b = racp(anomaly, mask, normal, "object", np.random.default_rng(42))
    assert racp.last_transforms == names_a
    assert a is not None and b is not None
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    differs = False
    for seed in range(43, 48):
        c = racp(anomaly, mask, normal, "object", np.random.default_rng(seed))
        if c is None or not (np.array_equal(a[0], c[0]) and np.array_equal(a[1], c[1])):
            differs = True
            break
    assert differs
    np.testing.assert_array_equal(np.random.get_state()[1], np_state)
    assert random.getstate() == py_state


# ---------------------------------------------------------------------------------------------------------
# Placement rule (paste_anomaly directly, no augmentation in the way)
# ---------------------------------------------------------------------------------------------------------


def test_anomaly_on_object_background_is_moved_onto_foreground() -> None:
    normal = _object_image()
    fg = foreground_mask(normal, "object")
    anomaly = _noise_image(3)
    # Two 4x4 regions in opposite corners: pure background for the centred disc.
    cut = _square_mask(1, 1, 4) | _square_mask(SIZE - 5, SIZE - 5, 4)
    for seed in range(10):
        out = paste_anomaly(anomaly, cut, normal, fg, 2 / 3, np.random.default_rng(seed))
        assert out is not None
        new_image, new_mask = out
        assert not (new_mask.astype(bool) & cut.astype(bool)).any()  # left the corners
        on_fg = (new_mask.astype(bool) & fg).sum() / new_mask.sum()
        assert on_fg > 0.5
        # each region is moved whole: its pixels are the anomaly's pixels of that region
        assert 16 <= new_mask.sum() <= 32
        outside = new_mask == 0
        np.testing.assert_array_equal(new_image[outside], normal[outside])


def test_region_moves_keep_shape_and_pixels() -> None:
    normal = _object_image()
    fg = foreground_mask(normal, "object")
    anomaly = _noise_image(3)
    cut = _square_mask(0, 0, 6)
    new_image, new_mask = paste_anomaly(anomaly, cut, normal, fg, 2 / 3, np.random.default_rng(1))
    ys, xs = np.nonzero(new_mask)
    top, left = ys.min(), xs.min()
    assert new_mask.sum() == 36 and ys.max() - top == 5 and xs.max() - left == 5
    np.testing.assert_array_equal(new_image[top : top + 6, left : left + 6], anomaly[:6, :6])


def test_anomaly_on_texture_stays() -> None:
    normal = _object_image()
    fg = foreground_mask(normal, "texture")
    cut = _square_mask(1, 1, 4)
    new_image, new_mask = paste_anomaly(_noise_image(3), cut, normal, fg, 2 / 3, np.random.default_rng(0))
    np.testing.assert_array_equal(new_mask, cut)


def test_anomaly_mostly_on_foreground_stays() -> None:
    normal = _object_image()
    fg = foreground_mask(normal, "object")
    cut = _square_mask(SIZE // 2 - 4, SIZE // 2 - 4, 8)  # centre of the disc
    _, new_mask = paste_anomaly(_noise_image(3), cut, normal, fg, 2 / 3, np.random.default_rng(0))
    np.testing.assert_array_equal(new_mask, cut)


def test_racp_object_background_anomaly_lands_on_foreground() -> None:
    """End to end: a corner anomaly pasted on an object image ends up (mostly) on the disc."""
    racp = RandAugmentCutPaste()
    normal = _object_image()
    fg = foreground_mask(normal, "object")
    fractions = []
    for seed in range(10):
        out = racp(_noise_image(1), _square_mask(2, 2, 6), normal, "object", np.random.default_rng(seed))
        if out is not None:
            mask = out[1].astype(bool)
            fractions.append((mask & fg).sum() / mask.sum())
    assert fractions and min(fractions) > 0.5


def test_non_square_images_keep_their_shape() -> None:
    racp = RandAugmentCutPaste()
    anomaly = np.random.default_rng(0).integers(0, 256, size=(40, 64, 3), dtype=np.uint8)
    mask = np.zeros((40, 64), dtype=np.uint8)
    mask[15:25, 25:40] = 1
    for family in ("rot90", "transpose"):
        aug = racp.augment(anomaly, mask, np.random.default_rng(0), transforms=[family])
        assert aug.image.shape == anomaly.shape and aug.mask.shape == mask.shape


# ---------------------------------------------------------------------------------------------------------
# balanced_batches
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("n_normal", "n_anomalous", "batch_size"), [(100, 10, 32), (7, 3, 6), (50, 40, 9)])
def test_balanced_batches_ratio_and_coverage(n_normal: int, n_anomalous: int, batch_size: int) -> None:
    labels = np.array([0] * n_normal + [1] * n_anomalous)
    labels = np.random.default_rng(0).permutation(labels)
    batches = balanced_batches(labels, batch_size, np.random.default_rng(1))
    all_idx = np.concatenate(batches)
    normal_idx = all_idx[labels[all_idx] == 0]
    anomalous_idx = all_idx[labels[all_idx] == 1]
    # every normal exactly once
    np.testing.assert_array_equal(np.sort(normal_idx), np.flatnonzero(labels == 0))
    for batch in batches:
        assert batch.dtype == np.int64 and len(batch) <= batch_size
        n_norm = int((labels[batch] == 0).sum())
        n_anom = int((labels[batch] == 1).sum())
        assert n_anom == -(-n_norm // 2)  # 2:1, rounded in favour of anomalies
    # anomalies reused evenly: counts differ by at most one
    counts = np.bincount(anomalous_idx, minlength=labels.size)[labels == 1]
    assert counts.max() - counts.min() <= 1
    # full batches are as full as the ratio allows
    assert max(len(b) for b in batches) >= batch_size - 1


def test_balanced_batches_32_is_21_plus_11_and_deterministic() -> None:
    labels = np.array([0] * 84 + [1] * 5)
    a = balanced_batches(labels, 32, np.random.default_rng(5))
    b = balanced_batches(labels, 32, np.random.default_rng(5))
    c = balanced_batches(labels, 32, np.random.default_rng(6))
    assert [len(x) for x in a] == [32, 32, 32, 32]
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c, strict=True))


def test_balanced_batches_rejects_single_class() -> None:
    with pytest.raises(ValueError):
        balanced_batches(np.zeros(10), 8, np.random.default_rng(0))
    with pytest.raises(ValueError):
        balanced_batches(np.ones(10), 8, np.random.default_rng(0))
