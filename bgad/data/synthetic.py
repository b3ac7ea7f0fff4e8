"""A small built-in synthetic dataset in the MVTec layout, for tests, smoke runs and the tutorial.

Generated on first use into ``cache_dir()/synthetic/v1-seed{seed}`` (or a given folder), atomically:
everything is written into a hidden temporary sibling folder that is renamed into place at the end,
so the final folder either does not exist or is complete. Concurrent callers each generate and the
first rename wins; the others discard their copy. Deterministic from ``seed`` (only
``numpy.random.Generator`` streams derived from the seed; PNG files are byte-identical across runs
with the same Pillow/zlib).

Categories (256x256 RGB):

* ``weave`` (texture): a periodic over/under woven pattern with noise; defects ``hole`` (dark
  irregular blob), ``scratch`` (bright thick stroke), ``stain`` (coloured blot).
* ``widget`` (object): a grooved metallic ring with six bolt holes on a dark background, shifted by a
  few pixels per image; defects ``crack`` (dark jagged line), ``missing_part`` (a bite out of the
  ring), ``spot`` (orange blob).

Per category: 40 ``train/good``, 10 ``test/good`` and 6 images per defect type, each with an exact
binary mask (0/255) in ``ground_truth/<defect>/<stem>_mask.png``.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from bgad.data.images import DatasetError
from bgad.data.mvtec import DATASET_INFO_FILE
from bgad.fileio import atomic_directory, storage_error
from bgad.paths import cache_dir

__all__ = [
    "SYNTHETIC_CATEGORIES",
    "SYNTHETIC_VERSION",
    "ensure_synthetic_dataset",
    "synthetic_dataset_dir",
]

SYNTHETIC_VERSION = 1
SIZE = 256
N_TRAIN = 40
N_TEST_GOOD = 10
N_PER_DEFECT = 6
_MIN_DEFECT_PIXELS = 80

_YY, _XX = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)


# ----------------------------------------------------------------------------------------------------
# shape helpers (all return boolean (SIZE, SIZE) arrays)
# ----------------------------------------------------------------------------------------------------
def _blob(rng: np.random.Generator, cx: float, cy: float, r_min: float, r_max: float) -> np.ndarray:
    """An irregular rotated ellipse with a wobbly outline centred at (cx, cy)."""
    a, b = rng.uniform(r_min, r_max, 2)
    rot = rng.uniform(0, np.pi)
    k = int(rng.integers(2, 6))
    wobble, phase = rng.uniform(0.08, 0.25), rng.uniform(0, 2 * np.pi)
    dx, dy = _XX - cx, _YY - cy
    u = dx * np.cos(rot) + dy * np.sin(rot)
    v = -dx * np.sin(rot) + dy * np.cos(rot)
    theta = np.arctan2(v, u)
    rho = np.sqrt((u / a) ** 2 + (v / b) ** 2)
    return rho <= 1.0 + wobble * np.sin(k * theta + phase)


def _polyline(points: list[tuple[float, float]], width: int) -> np.ndarray:
    img = Image.new("L", (SIZE, SIZE), 0)
    ImageDraw.Draw(img).line([(float(x), float(y)) for x, y in points], fill=255, width=width, joint="curve")
    return np.asarray(img) > 0


def _noise(rng: np.random.Generator, sigma: float) -> np.ndarray:
    out = rng.standard_normal((SIZE, SIZE, 3), dtype=np.float32)
    out *= sigma
    return out


def _paint(img: np.ndarray, mask: np.ndarray, colour, rng: np.random.Generator, alpha: float = 1.0) -> None:
    """Blend ``colour`` (+ a little noise) into ``img`` inside ``mask`` (in place)."""
    col = np.asarray(colour, np.float32)[None, :] + rng.normal(0.0, 6.0, (int(mask.sum()), 3)).astype(
        np.float32
    )
    img[mask] = (1.0 - alpha) * img[mask] + alpha * col


# ----------------------------------------------------------------------------------------------------
# weave (texture)
# ----------------------------------------------------------------------------------------------------
_WEAVE_W = 8  # thread width; the pattern repeats every 2 * _WEAVE_W pixels


@functools.lru_cache(maxsize=1)
def _weave_template() -> tuple[np.ndarray, np.ndarray]:
    """Brightness profile and thread colour of the weave on a grid one period larger than an image."""
    w = _WEAVE_W
    yy, xx = np.mgrid[0 : SIZE + 2 * w, 0 : SIZE + 2 * w].astype(np.float32)
    warp_on_top = ((xx // w + yy // w) % 2) == 0
    prof_warp = np.sin(np.pi * ((xx % w) + 0.5) / w) * (0.9 + 0.1 * np.cos(2 * np.pi * yy / (2 * w)))
    prof_weft = np.sin(np.pi * ((yy % w) + 0.5) / w) * (0.9 + 0.1 * np.cos(2 * np.pi * xx / (2 * w)))
    prof = np.where(warp_on_top, prof_warp, prof_weft)
    col = np.where(warp_on_top[..., None], np.float32([192, 162, 112]), np.float32([172, 142, 96]))
    base = (col * (0.55 + 0.45 * prof[..., None])).astype(np.float32)
    base.setflags(write=False)
    return base, warp_on_top


def _weave_normal(rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    base, _ = _weave_template()
    ox, oy = (int(v) for v in rng.integers(0, 2 * _WEAVE_W, 2))
    gain = np.float32(rng.uniform(0.94, 1.06))
    img = base[oy : oy + SIZE, ox : ox + SIZE] * gain + _noise(rng, 5.0)
    return img, {}


def _weave_defect(defect: str, img: np.ndarray, ctx: dict, rng: np.random.Generator) -> np.ndarray:
    margin = 30
    cx, cy = rng.uniform(margin, SIZE - margin, 2)
    if defect == "hole":
        mask = _blob(rng, cx, cy, 8, 18)
        _paint(img, mask, (28, 22, 18), rng)
    elif defect == "scratch":
        length, ang = rng.uniform(40, 100), rng.uniform(0, np.pi)
        n = 4
        pts = []
        for t in np.linspace(-0.5, 0.5, n):
            jitter = rng.normal(0, 2.5, 2)
            pts.append((cx + t * length * np.cos(ang) + jitter[0], cy + t * length * np.sin(ang) + jitter[1]))
        mask = _polyline(pts, int(rng.integers(3, 6)))
        _paint(img, mask, (246, 244, 236), rng)
    elif defect == "stain":
        mask = np.zeros((SIZE, SIZE), bool)
        for _ in range(int(rng.integers(2, 5))):
            ox, oy = rng.normal(0, 7, 2)
            mask |= _blob(rng, cx + ox, cy + oy, 6, 13)
        colours = [(55, 85, 210), (150, 30, 40), (40, 115, 45)]
        _paint(img, mask, colours[int(rng.integers(len(colours)))], rng, alpha=0.8)
    else:  # pragma: no cover - guarded by the category spec
        raise ValueError(defect)
    return mask


# ----------------------------------------------------------------------------------------------------
# widget (object)
# ----------------------------------------------------------------------------------------------------
_MAX_SHIFT = 8
_R_IN, _R_OUT = 34.0, 92.0


@functools.lru_cache(maxsize=1)
def _widget_template() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Radius, ring mask and metal grey level around a centred widget, on a grid 2*_MAX_SHIFT larger."""
    n = SIZE + 2 * _MAX_SHIFT
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float32)
    c = n / 2
    r = np.sqrt((xx - c) ** 2 + (yy - c) ** 2)
    theta = np.arctan2(yy - c, xx - c)
    ring = (r >= _R_IN) & (r <= _R_OUT)
    grey = 168 + 26 * np.sin(r / 2.2) + 10 * np.cos(theta - 0.7) + 16 * ((r > _R_OUT - 6) | (r < _R_IN + 5))
    metal = (grey[..., None] * np.float32([0.95, 1.0, 1.06])).astype(np.float32)
    for a in (r, ring, metal):
        a.setflags(write=False)
    return r, ring, metal


def _widget_normal(rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    r_t, ring_t, metal_t = _widget_template()
    sx, sy = (int(v) for v in rng.integers(-_MAX_SHIFT, _MAX_SHIFT + 1, 2))
    # the widget's centre moves by (sx, sy): read the centred template shifted the other way
    win = (slice(_MAX_SHIFT - sy, _MAX_SHIFT - sy + SIZE), slice(_MAX_SHIFT - sx, _MAX_SHIFT - sx + SIZE))
    cx, cy = SIZE / 2 + sx, SIZE / 2 + sy
    obj = ring_t[win].copy()
    rot = rng.uniform(-0.06, 0.06)
    r_bolt = (_R_IN + _R_OUT) / 2
    for k in range(6):
        a = rot + k * np.pi / 3
        bx, by = cx + r_bolt * np.cos(a), cy + r_bolt * np.sin(a)
        x0, x1 = int(bx) - 8, int(bx) + 10
        y0, y1 = int(by) - 8, int(by) + 10
        obj[y0:y1, x0:x1] &= (_XX[y0:y1, x0:x1] - bx) ** 2 + (_YY[y0:y1, x0:x1] - by) ** 2 > 7.0**2
    background = np.float32([22, 22, 28]) + 6.0 * (_YY / SIZE)[..., None] + _noise(rng, 4.0)
    metal = metal_t[win] * np.float32(rng.uniform(0.95, 1.05)) + _noise(rng, 4.0)
    img = np.where(obj[..., None], metal, background)
    return img, {"center": (cx, cy), "r_in": _R_IN, "r_out": _R_OUT, "obj": obj, "bg": background}


def _widget_defect(defect: str, img: np.ndarray, ctx: dict, rng: np.random.Generator) -> np.ndarray:
    (cx, cy), r_in, r_out, obj = ctx["center"], ctx["r_in"], ctx["r_out"], ctx["obj"]
    ang = rng.uniform(0, 2 * np.pi)
    if defect == "crack":
        rad = rng.uniform(r_in + 10, r_out - 10)
        x, y = cx + rad * np.cos(ang), cy + rad * np.sin(ang)
        heading = rng.uniform(0, 2 * np.pi)
        pts = [(x, y)]
        for _ in range(int(rng.integers(5, 10))):
            heading += rng.normal(0, 0.6)
            step = rng.uniform(5, 10)
            x, y = x + step * np.cos(heading), y + step * np.sin(heading)
            pts.append((x, y))
        mask = _polyline(pts, int(rng.integers(3, 5))) & obj
        _paint(img, mask, (34, 28, 28), rng)
    elif defect == "missing_part":
        rad = r_out + rng.uniform(-4, 6)
        bite = _blob(rng, cx + rad * np.cos(ang), cy + rad * np.sin(ang), 14, 26)
        mask = bite & obj
        img[mask] = ctx["bg"][mask]
    elif defect == "spot":
        size = rng.uniform(7, 14)
        rad = rng.uniform(r_in + size, r_out - size)
        mask = _blob(rng, cx + rad * np.cos(ang), cy + rad * np.sin(ang), size * 0.7, size) & obj
        _paint(img, mask, (225, 95, 30), rng, alpha=0.85)
    else:  # pragma: no cover - guarded by the category spec
        raise ValueError(defect)
    return mask


# ----------------------------------------------------------------------------------------------------
# dataset
# ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _CategorySpec:
    name: str
    kind: str
    defects: tuple[str, ...]
    normal: Callable[[np.random.Generator], tuple[np.ndarray, dict]]
    defect: Callable[[str, np.ndarray, dict, np.random.Generator], np.ndarray]


_SPECS: tuple[_CategorySpec, ...] = (
    _CategorySpec("weave", "texture", ("hole", "scratch", "stain"), _weave_normal, _weave_defect),
    _CategorySpec("widget", "object", ("crack", "missing_part", "spot"), _widget_normal, _widget_defect),
)

#: name -> (kind, defect types) of the generated categories.
SYNTHETIC_CATEGORIES: dict[str, tuple[str, tuple[str, ...]]] = {s.name: (s.kind, s.defects) for s in _SPECS}


def _rng(seed: int, *stream: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), *stream])


def _to_uint8(img: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def _save_png(array: np.ndarray, path: Path) -> None:
    Image.fromarray(array).save(path, format="PNG", compress_level=1)


def _render(
    spec: _CategorySpec, defect: str, seed: int, cat_index: int, stream: int, i: int
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """Image ``i`` of one (category, folder): (uint8 image, boolean mask or None, float clean image)."""
    rng = _rng(seed, SYNTHETIC_VERSION, cat_index, stream, i)
    clean, ctx = spec.normal(rng)
    if defect == "good":
        return _to_uint8(clean), None, clean
    for _ in range(50):
        img = clean.copy()
        mask = spec.defect(defect, img, ctx, rng)
        if mask.sum() >= _MIN_DEFECT_PIXELS:
            return _to_uint8(img), mask, clean
    raise RuntimeError(f"could not place a {defect} defect in synthetic image {i}")  # pragma: no cover


def _folders(spec: _CategorySpec) -> list[tuple[str, str, int, int]]:
    """(split, defect type, count, rng stream) of every image folder of a category."""
    return [
        ("train", "good", N_TRAIN, 0),
        ("test", "good", N_TEST_GOOD, 1),
        *(("test", d, N_PER_DEFECT, 2 + k) for k, d in enumerate(spec.defects)),
    ]


def _write_category(out: Path, spec: _CategorySpec, seed: int, cat_index: int) -> dict[str, int]:
    counts: dict[str, int] = {}
    for split, defect, n, stream in _folders(spec):
        folder = out / spec.name / split / defect
        folder.mkdir(parents=True)
        gt = out / spec.name / "ground_truth" / defect
        if defect != "good":
            gt.mkdir(parents=True)
        for i in range(n):
            img, mask, _ = _render(spec, defect, seed, cat_index, stream, i)
            if mask is not None:
                _save_png(mask.astype(np.uint8) * 255, gt / f"{i:03d}_mask.png")
            _save_png(img, folder / f"{i:03d}.png")
        counts[f"{split}/{defect}"] = n
    return counts


def _generate(out: Path, seed: int) -> None:
    categories = {}
    for cat_index, spec in enumerate(_SPECS):
        counts = _write_category(out, spec, seed, cat_index)
        categories[spec.name] = {"kind": spec.kind, "defect_types": list(spec.defects), "counts": counts}
    info = {
        "name": "synthetic",
        "has_pixel_masks": True,
        "generator_version": SYNTHETIC_VERSION,
        "seed": int(seed),
        "image_size": [SIZE, SIZE],
        "categories": categories,
    }
    # Written last: its presence marks a complete folder (the rename already guarantees that, but it
    # also lets us recognise a folder the user pointed us at).
    (out / DATASET_INFO_FILE).write_text(json.dumps(info, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def synthetic_dataset_dir(seed: int = 0) -> Path:
    """The default location of the synthetic dataset for ``seed`` (not necessarily generated yet)."""
    return cache_dir() / "synthetic" / f"v{SYNTHETIC_VERSION}-seed{int(seed)}"


def _existing_info(folder: Path) -> dict | None:
    path = folder / DATASET_INFO_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _check_existing(folder: Path, seed: int) -> bool:
    """True when ``folder`` already holds this dataset; raise when it holds something else."""
    if not folder.exists():
        return False
    if not folder.is_dir():
        raise DatasetError(f"{folder} exists and is not a folder; cannot put the synthetic dataset there.")
    info = _existing_info(folder)
    if info is None:
        if any(folder.iterdir()):
            raise DatasetError(
                f"{folder} exists, is not empty and is not a synthetic dataset (no {DATASET_INFO_FILE}); "
                "choose an empty or new folder, or delete it."
            )
        return False
    if (
        info.get("name") != "synthetic"
        or info.get("generator_version") != SYNTHETIC_VERSION
        or info.get("seed") != seed
    ):
        raise DatasetError(
            f"{folder} holds a different dataset (name={info.get('name')!r}, "
            f"generator_version={info.get('generator_version')!r}, seed={info.get('seed')!r}); expected the synthetic "
            f"dataset v{SYNTHETIC_VERSION} with seed {seed}. Use another folder or delete it."
        )
    return True


def ensure_synthetic_dataset(root: Path | None = None, seed: int = 0) -> Path:
    """Return the folder of the synthetic dataset for ``seed``, generating it (atomically) if needed.

    ``root`` defaults to :func:`synthetic_dataset_dir`. If it exists it must be empty or already hold
    this dataset (same generator version and seed).
    """
    seed = int(seed)
    final = Path(root).expanduser() if root is not None else synthetic_dataset_dir(seed)
    if _check_existing(final, seed):
        return final
    try:
        with atomic_directory(final) as tmp:  # a concurrent caller that finishes first wins
            _generate(tmp, seed)
            if final.is_dir() and not any(final.iterdir()):
                final.rmdir()  # an empty folder is replaced
    except OSError as exc:
        raise storage_error(final, exc, "set BGAD_CACHE_DIR to a writable folder") from exc
    if not _check_existing(final, seed):
        raise DatasetError(f"could not move the generated synthetic dataset into {final}")
    return final
