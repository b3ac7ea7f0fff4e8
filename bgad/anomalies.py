"""Known-anomaly data for phase 2 of BGAD (docs/method.md §3, Known anomalies).

Three pieces live here, all numpy + OpenCV + albumentations (no torch) so they can run inside data-loader
workers and be tested without a GPU:

* :func:`foreground_mask` — where a pasted anomaly is allowed to land on a normal image (Otsu for objects,
  everywhere for textures).
* :class:`RandAugmentCutPaste` (RACP) — take a real known anomaly with its mask, apply 3 distinct random
  transform families jointly to image and mask, cut exactly the masked pixels and paste them onto a normal
  image, moving the pieces onto the foreground when the kept location would mostly land on background.
* :func:`balanced_batches` — the CVPR text's 2:1 normal:anomalous batch sampler (an option, off by default
  in the released code).

Randomness: every function takes an explicit :class:`numpy.random.Generator`; albumentations transforms are
re-seeded from it before each use, so the same generator state always gives the same sample and no global
RNG (``random``, ``np.random``) is read or advanced.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import albumentations as A
import cv2
import numpy as np
from albumentations.core.transforms_interface import DualTransform

__all__ = [
    "FOREGROUND_KINDS",
    "RACP_TRANSFORM_FAMILIES",
    "AugmentedAnomaly",
    "FastPiecewiseAffine",
    "RandAugmentCutPaste",
    "balanced_batches",
    "foreground_mask",
    "paste_anomaly",
]

#: The 10 transform families of docs/method.md §3, in a fixed order (indices drawn by the RNG refer to it).
RACP_TRANSFORM_FAMILIES: tuple[str, ...] = (
    "rot90",
    "flip",
    "transpose",
    "optical_distortion",
    "noise",
    "blur",
    "shift_scale_rotate",
    "grid_elastic_piecewise",
    "clahe_sharpen_emboss_brightness_contrast",
    "hue_saturation",
)

#: Accepted values of ``kind``: MVTec-style categories are either textures or objects.
FOREGROUND_KINDS: tuple[str, ...] = ("texture", "object")

# Geometric transforms fill uncovered pixels with 0 in the image AND in the mask: a reflected border would
# duplicate parts of the anomaly mask, and a filled image border is never cut because its mask is 0.
_CONSTANT_BORDER: dict[str, Any] = {"border_mode": cv2.BORDER_CONSTANT, "fill": 0, "fill_mask": 0}


# ---------------------------------------------------------------------------------------------------------
# Foreground
# ---------------------------------------------------------------------------------------------------------


def _border_pixels(mask: np.ndarray) -> np.ndarray:
    """The 1-pixel frame of a 2-D array, flattened (corners counted twice; harmless for a fraction)."""
    return np.concatenate([mask[0, :], mask[-1, :], mask[:, 0], mask[:, -1]])


def foreground_mask(image: np.ndarray, kind: str, min_fraction: float = 0.01) -> np.ndarray:
    """Boolean (H, W) mask of where a pasted anomaly may land on ``image``.

    Why: RACP must not paste a defect onto the empty background of an object category, where no real
    defect can appear (docs/method.md §3); textures are defect-prone everywhere.

    * ``kind="texture"``: the whole image.
    * ``kind="object"``: Otsu binarisation of the grey image. Which side is the object is decided by a
      deterministic rule: MVTec-style objects are centred and the background surrounds them, so the
      foreground is the side that covers the *smaller* fraction of the 1-pixel image border. Ties are
      broken by the smaller total area, then by the brighter side.
    * If the chosen side covers less than ``min_fraction`` of the image (degenerate threshold, e.g. a flat
      image), the whole image is returned, so a caller always gets somewhere to paste.

    ``image`` is uint8 (H, W, 3) RGB (BGR gives the same answer up to grey-weight rounding) or (H, W) grey.
    """
    if kind not in FOREGROUND_KINDS:
        raise ValueError(f"kind must be one of {FOREGROUND_KINDS}, got {kind!r}")
    if image.ndim not in (2, 3) or image.dtype != np.uint8:
        raise ValueError(f"image must be uint8 (H, W) or (H, W, 3), got {image.dtype} {image.shape}")
    height, width = image.shape[:2]
    whole = np.ones((height, width), dtype=bool)
    if kind == "texture":
        return whole

    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) if image.ndim == 3 else image
    grey = np.ascontiguousarray(grey)
    _, binary = cv2.threshold(grey, 0, 1, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    bright = binary.astype(bool)
    dark = ~bright

    border_bright = float(_border_pixels(bright).mean())
    border_dark = 1.0 - border_bright
    if border_bright != border_dark:
        fg = bright if border_bright < border_dark else dark
    elif bright.sum() != dark.sum():
        fg = bright if bright.sum() < dark.sum() else dark
    else:
        fg = bright

    if fg.mean() < min_fraction:
        return whole
    return fg


# ---------------------------------------------------------------------------------------------------------
# Transforms
# ---------------------------------------------------------------------------------------------------------


def _bilinear_upsample(grid: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear interpolation of an (R, C) control grid whose points sit at linspace(0, H-1) × linspace(0, W-1)."""
    rows, cols = grid.shape

    def axis(n_ctrl: int, size: int) -> tuple[np.ndarray, np.ndarray]:
        pos = np.linspace(0.0, n_ctrl - 1, size)
        i0 = np.minimum(np.floor(pos).astype(np.intp), n_ctrl - 2)
        return i0, pos - i0

    r0, fy = axis(rows, height)
    c0, fx = axis(cols, width)
    r0, fy = r0[:, None], fy[:, None]
    c0, fx = c0[None, :], fx[None, :]
    out = (
        (1 - fy) * (1 - fx) * grid[r0, c0]
        + (1 - fy) * fx * grid[r0, c0 + 1]
        + fy * (1 - fx) * grid[r0 + 1, c0]
        + fy * fx * grid[r0 + 1, c0 + 1]
    )
    return out.astype(np.float32)


class FastPiecewiseAffine(DualTransform):
    """Piecewise-affine-style local distortion in O(H·W) vectorised OpenCV.

    Why not ``A.PiecewiseAffine``: in albumentations 2.0.8 it builds its remap tables with a per-pixel
    Python loop (inverse-distance weighting over the control points), ~0.6 s for one 256×256 image and
    quadratic in the side, which would dominate RACP. This version keeps the same control-point model
    (an ``nb_rows`` × ``nb_cols`` grid, each point jittered by N(0, (scale·min(H, W)/3)²), scale drawn in
    ``scale``) and interpolates the displacements bilinearly between control points, then remaps the image
    bilinearly and the mask with nearest neighbour so the mask stays binary.
    """

    def __init__(
        self,
        scale: tuple[float, float] = (0.03, 0.05),
        nb_rows: int = 4,
        nb_cols: int = 4,
        p: float = 1.0,
    ) -> None:
        super().__init__(p=p)
        self.scale = scale
        self.nb_rows = max(2, int(nb_rows))
        self.nb_cols = max(2, int(nb_cols))

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        """Draw the control-point jitter and expand it to full-resolution remap tables."""
        height, width = params["shape"][:2]
        scale = self.py_random.uniform(*self.scale)
        sigma = scale * min(height, width) / 3.0
        jitter = self.random_generator.normal(0.0, sigma, size=(self.nb_rows, self.nb_cols, 2))
        dx = _bilinear_upsample(jitter[..., 0], height, width)
        dy = _bilinear_upsample(jitter[..., 1], height, width)
        grid_x, grid_y = np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32))
        return {"map_x": grid_x + dx, "map_y": grid_y + dy}

    def apply(self, img: np.ndarray, map_x: np.ndarray, map_y: np.ndarray, **params: Any) -> np.ndarray:
        return cv2.remap(img, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)

    def apply_to_mask(
        self, mask: np.ndarray, map_x: np.ndarray, map_y: np.ndarray, **params: Any
    ) -> np.ndarray:
        return cv2.remap(mask, map_x, map_y, cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT, borderValue=0)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("scale", "nb_rows", "nb_cols")


def _grid_elastic_piecewise(elastic_alpha: float, elastic_sigma: float) -> A.OneOf:
    """One of grid distortion, elastic transform or :class:`FastPiecewiseAffine` (mask kept {0, 1})."""
    return A.OneOf(
        [
            A.GridDistortion(mask_interpolation=cv2.INTER_NEAREST, p=1.0, **_CONSTANT_BORDER),
            A.ElasticTransform(
                alpha=elastic_alpha,
                sigma=elastic_sigma,
                mask_interpolation=cv2.INTER_NEAREST,
                p=1.0,
                **_CONSTANT_BORDER,
            ),
            FastPiecewiseAffine(p=1.0),
        ],
        p=1.0,
    )


def _clahe_sharpen_emboss_brightness_contrast() -> A.OneOf:
    return A.OneOf(
        [
            A.CLAHE(clip_limit=2.0, p=1.0),
            A.Sharpen(p=1.0),
            A.Emboss(p=1.0),
            A.RandomBrightnessContrast(p=1.0),
        ],
        p=1.0,
    )


def build_transform_families(
    noise_std_range: tuple[float, float] = (0.0124, 0.0277),
    elastic_alpha: float = 120.0,
    elastic_sigma: float = 6.0,
) -> dict[str, A.BasicTransform]:
    """One always-applied (p=1) albumentations transform per RACP family, keyed by family name.

    Why these settings: each family mirrors the classic albumentations example pipeline that the RACP
    list follows (docs/method.md §3), ported to the 2.x API:

    * ``flip`` is one of horizontal/vertical flip (2.x has no random ``Flip``).
    * ``noise``: 2.x ``GaussNoise`` takes a std as a fraction of 255; the default here equals the 1.x
      default ``var_limit=(10, 50)`` (std 3.2–7.1 grey levels). The 2.x default (0.2–0.44) is ~15× stronger.
    * ``shift_scale_rotate`` uses ``Affine`` with the 1.x ``ShiftScaleRotate`` defaults (shift ±6.25 %,
      scale ±10 %, rotation ±45°); 2.x deprecates ``ShiftScaleRotate`` in favour of ``Affine``.
    * ``grid_elastic_piecewise``: 2.x ``ElasticTransform`` defaults (alpha=1, sigma=50) are visually the
      identity once ``alpha_affine`` was removed, so alpha=120, sigma=6 is used; piecewise affine is
      :class:`FastPiecewiseAffine` (see there for why).
    * all geometric transforms use a constant 0 border for image and mask and nearest-neighbour mask
      interpolation, so the mask stays {0, 1}.
    """
    families: dict[str, A.BasicTransform] = {
        "rot90": A.RandomRotate90(p=1.0),
        "flip": A.OneOf([A.HorizontalFlip(p=1.0), A.VerticalFlip(p=1.0)], p=1.0),
        "transpose": A.Transpose(p=1.0),
        "optical_distortion": A.OpticalDistortion(
            distort_limit=(-0.05, 0.05), mask_interpolation=cv2.INTER_NEAREST, p=1.0, **_CONSTANT_BORDER
        ),
        "noise": A.GaussNoise(std_range=noise_std_range, p=1.0),
        "blur": A.Blur(blur_limit=(3, 7), p=1.0),
        "shift_scale_rotate": A.Affine(
            translate_percent=(-0.0625, 0.0625),
            scale=(0.9, 1.1),
            rotate=(-45, 45),
            mask_interpolation=cv2.INTER_NEAREST,
            p=1.0,
            **_CONSTANT_BORDER,
        ),
        "grid_elastic_piecewise": _grid_elastic_piecewise(elastic_alpha, elastic_sigma),
        "clahe_sharpen_emboss_brightness_contrast": _clahe_sharpen_emboss_brightness_contrast(),
        "hue_saturation": A.HueSaturationValue(p=1.0),
    }
    assert tuple(families) == RACP_TRANSFORM_FAMILIES
    return families


def _fit_to_shape(
    image: np.ndarray, mask: np.ndarray, shape: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """Centre-crop / zero-pad ``image`` and ``mask`` back to ``shape``.

    Why: rot90 and transpose swap H and W of a non-square image; the paste needs the target's shape.
    A no-op for square images (the usual case).
    """
    height, width = shape
    if image.shape[:2] == (height, width):
        return image, mask
    out_img = np.zeros((height, width, *image.shape[2:]), dtype=image.dtype)
    out_mask = np.zeros((height, width), dtype=mask.dtype)
    src_h, src_w = image.shape[:2]
    h, w = min(height, src_h), min(width, src_w)
    sy, sx = (src_h - h) // 2, (src_w - w) // 2
    dy, dx = (height - h) // 2, (width - w) // 2
    out_img[dy : dy + h, dx : dx + w] = image[sy : sy + h, sx : sx + w]
    out_mask[dy : dy + h, dx : dx + w] = mask[sy : sy + h, sx : sx + w]
    return out_img, out_mask


# ---------------------------------------------------------------------------------------------------------
# Paste
# ---------------------------------------------------------------------------------------------------------


def paste_anomaly(
    anomaly_image: np.ndarray,
    cut_mask: np.ndarray,
    normal_image: np.ndarray,
    foreground: np.ndarray,
    keep_fraction: float,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray] | None:
    """Paste exactly the ``cut_mask`` pixels of ``anomaly_image`` onto a copy of ``normal_image``.

    Placement rule (docs/method.md §3): keep the location if at least ``keep_fraction`` of the cut pixels land on
    ``foreground``; otherwise move every 8-connected region of the cut separately so that its bounding-box
    centre sits on a random foreground pixel of the target, with the offset clipped so the region stays fully
    inside the image. Regions are pasted in label order; a later region overwrites an earlier one where they
    overlap, so pasted pixels always equal the anomaly pixels of the returned mask.

    Returns ``(new_image, new_mask)`` with ``new_mask`` uint8 {0, 1}, or ``None`` when the cut is empty
    (nothing was pasted, so the sample is not an anomaly).
    """
    cut = cut_mask.astype(bool)
    n_cut = int(cut.sum())
    if n_cut == 0:
        return None
    height, width = cut.shape
    new_image = normal_image.copy()
    new_mask = np.zeros((height, width), dtype=np.uint8)

    if float((cut & foreground).sum()) >= keep_fraction * n_cut:
        new_image[cut] = anomaly_image[cut]
        new_mask[cut] = 1
        return new_image, new_mask

    fg_y, fg_x = np.nonzero(foreground)
    if fg_y.size == 0:  # no foreground at all: nowhere better to go, keep the location
        fg_y, fg_x = np.nonzero(np.ones_like(cut))
    n_labels, labels, stats, _ = cv2.connectedComponentsWithStats(cut.astype(np.uint8), connectivity=8)
    for label in range(1, n_labels):
        x0, y0, w, h = (int(v) for v in stats[label, :4])
        region = labels[y0 : y0 + h, x0 : x0 + w] == label
        k = int(rng.integers(fg_y.size))
        top = int(np.clip(fg_y[k] - h // 2, 0, height - h))
        left = int(np.clip(fg_x[k] - w // 2, 0, width - w))
        src = anomaly_image[y0 : y0 + h, x0 : x0 + w]
        dst = new_image[top : top + h, left : left + w]
        dst[region] = src[region]
        new_mask[top : top + h, left : left + w][region] = 1
    return new_image, new_mask


# ---------------------------------------------------------------------------------------------------------
# RACP
# ---------------------------------------------------------------------------------------------------------


class AugmentedAnomaly(NamedTuple):
    """An anomaly image and its mask after the RACP transforms, before pasting."""

    image: np.ndarray
    mask: np.ndarray
    transforms: tuple[str, ...]


class RandAugmentCutPaste:
    """RandAugmented CutPaste (docs/method.md §3): make one synthetic anomaly from a real known anomaly.

    Why: BGAD has only a handful of real known anomalies; RACP multiplies them into varied but realistic
    defects (real defect texture, new shape/appearance/location, on a normal image).

    Not thread-safe (the albumentations transforms hold their own RNG state, re-seeded per sample); give each
    data-loader worker its own instance and its own ``rng``.

    Parameters:
        n_transforms: how many DISTINCT families of :data:`RACP_TRANSFORM_FAMILIES` to apply per sample.
        keep_fraction: keep the augmented location if at least this fraction of the cut pixels is on the
            target's foreground; else move each connected region onto the foreground.
        min_foreground_fraction: passed to :func:`foreground_mask` (degenerate-Otsu fallback).
        noise_std_range, elastic_alpha, elastic_sigma: see :func:`build_transform_families`.
    """

    def __init__(
        self,
        n_transforms: int = 3,
        keep_fraction: float = 2.0 / 3.0,
        min_foreground_fraction: float = 0.01,
        noise_std_range: tuple[float, float] = (0.0124, 0.0277),
        elastic_alpha: float = 120.0,
        elastic_sigma: float = 6.0,
    ) -> None:
        if not 1 <= n_transforms <= len(RACP_TRANSFORM_FAMILIES):
            raise ValueError(
                f"n_transforms must be in [1, {len(RACP_TRANSFORM_FAMILIES)}], got {n_transforms}"
            )
        if not 0.0 <= keep_fraction <= 1.0:
            raise ValueError(f"keep_fraction must be in [0, 1], got {keep_fraction}")
        self.n_transforms = n_transforms
        self.keep_fraction = keep_fraction
        self.min_foreground_fraction = min_foreground_fraction
        self.families = build_transform_families(noise_std_range, elastic_alpha, elastic_sigma)
        #: Families used by the latest :meth:`augment` / :meth:`__call__`, in application order.
        self.last_transforms: tuple[str, ...] = ()

    def choose_transforms(self, rng: np.random.Generator) -> tuple[str, ...]:
        """Draw ``n_transforms`` distinct family names, in the order they will be applied."""
        idx = rng.choice(len(RACP_TRANSFORM_FAMILIES), size=self.n_transforms, replace=False)
        return tuple(RACP_TRANSFORM_FAMILIES[int(i)] for i in idx)

    def augment(
        self,
        anomaly_image: np.ndarray,
        anomaly_mask: np.ndarray,
        rng: np.random.Generator,
        transforms: Sequence[str] | None = None,
    ) -> AugmentedAnomaly:
        """Apply the chosen families jointly to image and mask (the mask stays uint8 {0, 1}).

        ``transforms`` overrides the random choice (for tests and ablations); the order is the application
        order. Each transform is re-seeded from ``rng`` right before it runs, so the result depends only on
        the generator state.
        """
        _check_pair(anomaly_image, anomaly_mask)
        names = self.choose_transforms(rng) if transforms is None else tuple(transforms)
        unknown = [n for n in names if n not in self.families]
        if unknown:
            raise ValueError(f"unknown transform families {unknown}; known: {RACP_TRANSFORM_FAMILIES}")
        seeds = rng.integers(0, 2**32, size=len(names), dtype=np.uint64)
        image = np.ascontiguousarray(anomaly_image)
        mask = (np.asarray(anomaly_mask) > 0).astype(np.uint8)
        for name, seed in zip(names, seeds, strict=True):
            transform = self.families[name]
            transform.set_random_seed(int(seed))
            out = transform(image=image, mask=mask)
            image, mask = out["image"], out["mask"]
        image, mask = _fit_to_shape(image, mask, anomaly_image.shape[:2])
        self.last_transforms = names
        return AugmentedAnomaly(image=image, mask=(mask > 0).astype(np.uint8), transforms=names)

    def __call__(
        self,
        anomaly_image: np.ndarray,
        anomaly_mask: np.ndarray,
        normal_image: np.ndarray,
        kind: str,
        rng: np.random.Generator,
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """One RACP sample: ``(new_image, new_mask)`` on ``normal_image``, or ``None`` if nothing was pasted.

        ``None`` happens when the anomaly mask is empty or the transforms pushed it out of the frame; the
        caller should then draw again or skip (an empty pasted mask is not an anomaly).
        """
        _check_pair(normal_image, anomaly_mask)
        if anomaly_image.shape != normal_image.shape:
            raise ValueError(f"anomaly {anomaly_image.shape} and normal {normal_image.shape} shapes differ")
        if not np.any(anomaly_mask):
            self.last_transforms = ()
            return None
        aug = self.augment(anomaly_image, anomaly_mask, rng)
        foreground = foreground_mask(normal_image, kind, self.min_foreground_fraction)
        return paste_anomaly(aug.image, aug.mask, normal_image, foreground, self.keep_fraction, rng)


def _check_pair(image: np.ndarray, mask: np.ndarray) -> None:
    """Fail early on the shape/dtype mistakes that would otherwise surface deep inside OpenCV."""
    if image.dtype != np.uint8 or image.ndim != 3:
        raise ValueError(f"image must be uint8 (H, W, C), got {image.dtype} {image.shape}")
    if mask.shape != image.shape[:2]:
        raise ValueError(f"mask shape {mask.shape} != image H, W {image.shape[:2]}")


# ---------------------------------------------------------------------------------------------------------
# Balanced sampler
# ---------------------------------------------------------------------------------------------------------


def balanced_batches(
    labels: np.ndarray,
    batch_size: int,
    rng: np.random.Generator,
    normal_per_anomaly: int = 2,
) -> list[np.ndarray]:
    """One epoch of index batches with a ``normal_per_anomaly``:1 normal:anomalous ratio.

    Why: the CVPR text trains with a 2:1 balanced sampler, so that each batch has anomalies to push even
    though they are few (the released code leaves it off; keep it an option).

    Rule: ``labels`` is 0 for normal and non-zero for anomalous. Each batch holds ``k`` normals and
    ``ceil(k / normal_per_anomaly)`` anomalies, ``k`` the largest count that fits ``batch_size`` (for 32 and
    2:1, 21 + 11). Every normal index appears exactly once per epoch (shuffled; the last batch may hold fewer
    normals, with anomalies in the same proportion). Anomalous indices are drawn from a stream of
    back-to-back random permutations, so each is reused as evenly as possible. Indices within a batch are
    shuffled. Deterministic given ``rng``.
    """
    labels = np.asarray(labels).reshape(-1)
    if normal_per_anomaly < 1:
        raise ValueError(f"normal_per_anomaly must be >= 1, got {normal_per_anomaly}")
    if batch_size < 2:
        raise ValueError(f"batch_size must be >= 2 to hold a normal and an anomaly, got {batch_size}")
    normal = np.flatnonzero(labels == 0)
    anomalous = np.flatnonzero(labels != 0)
    if normal.size == 0 or anomalous.size == 0:
        raise ValueError(f"need both classes, got {normal.size} normal and {anomalous.size} anomalous")

    def n_anomalous(k: int) -> int:
        return -(-k // normal_per_anomaly)

    k = batch_size - 1
    while k > 1 and k + n_anomalous(k) > batch_size:
        k -= 1

    normal = rng.permutation(normal)
    chunks = [normal[i : i + k] for i in range(0, normal.size, k)]
    needed = sum(n_anomalous(len(c)) for c in chunks)
    n_perm = -(-needed // anomalous.size)
    stream = np.concatenate([rng.permutation(anomalous) for _ in range(n_perm)])

    batches: list[np.ndarray] = []
    pos = 0
    for chunk in chunks:
        m = n_anomalous(len(chunk))
        batch = np.concatenate([chunk, stream[pos : pos + m]])
        pos += m
        batches.append(rng.permutation(batch).astype(np.int64))
    return batches
