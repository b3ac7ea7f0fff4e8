"""Converters from the raw AITEX, ELPV, BrainMRI and HeadCT copies to the MVTec layout (docs/datasets.md).

Each ``prepare_<name>(raw, root, seed=42) -> root`` writes ``root/<category>/{train,test,ground_truth}``
plus ``root/manifest.csv`` and ``root/bgad_dataset.json`` (see :mod:`bgad.data.manifest`).

Rules (the same for all four):

* Every listing is sorted; the normal/train-test split is
  ``sklearn.model_selection.train_test_split(sorted_normals, test_size=0.25, random_state=seed)``
  and therefore a function of (sorted file list, seed) only. It is written out in ``manifest.csv``.
* Atomic: the dataset is built in a hidden temporary sibling of ``root``, its file counts are checked
  against the plan, then it is renamed into place; a failure leaves nothing behind.
* Idempotent: a second call with the same input and seed finds the finished dataset by its manifest
  and returns at once. **A different seed (or different raw input) for an existing root is an error**
  (prepared datasets are never overwritten) - pass another ``root`` such as ``data_dir()/aitex_seed7``.
* Nothing is dropped silently: any file left out on purpose is listed with its reason in
  ``bgad_dataset.json["conversion"]["excluded"]``; anything unexpected (unknown file types or names,
  unreadable/truncated images, a defect image without a mask, a mask of the wrong size, missing or
  empty folders) raises :class:`~bgad.data.images.DatasetError` naming the file.

Dataset-specific choices:

* **AITEX** is one category ``aitex`` (kind ``texture``, pixel masks), as in the DRA comparison the
  paper follows. Each 4096x256 image is cut into 16 tiles 256 px wide (left to right, ``_00`` .. ``_15``).
  Normal tiles (all tiles of ``NoDefect_images``) are split 75/25 at tile level. A defect tile goes to
  ``test/<defect name>`` (lower-case names, e.g. ``broken_end``) when its mask tile is non-empty, with
  the binarised mask tile (0/255) in ``ground_truth``; otherwise it is dropped and counted
  (``conversion.dropped_empty_mask_tiles``). The raw masks are anti-aliased grey PNGs (some ``LA``);
  a mask pixel is foreground when its grey value is >= :data:`AITEX_MASK_THRESHOLD` (128).
  Quirks: ``0044_019_04`` and ``0097_030_03`` use the union of ``_mask1``/``_mask2``;
  ``0100_025_08`` has no mask, so it cannot be tiled into labelled tiles and is **excluded** (recorded);
  ``Defect_images/unused/`` (one 3796 px wide image, ``0094_027_05``) is ignored (recorded, its mask too);
  ``NoDefect_images/2608691-202020u/0018_00_01.png`` (malformed name, a stray second image for index
  0018 next to ``0018_000_01.png``) is *kept* with a recorded note: its pixels differ from 0018_000_01 as
  much as any two images of that fabric do (it is no copy), and DRA's split counts (1692/564 normal tiles
  = 141 images) include it. With seed 42 the real copy gives 1692 train / 564 test normal tiles and 183
  defect tiles (DRA: 183).
* **ELPV** is category ``elpv``: probability 0 -> normal; probability 1 -> ``test/mono`` or
  ``test/poly``; probabilities strictly between 0 and 1 are left out and counted.
* **BrainMRI** (``brainmri``) and **HeadCT** (``headct``): normal -> 75/25, every abnormal image ->
  ``test/defect``. Image files are copied byte for byte (after a full decode check), names kept.
"""

from __future__ import annotations

import csv
import re
import shutil
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError
from sklearn.model_selection import train_test_split

from bgad.data.images import (
    DatasetError,
    StrayEntryWording,
    is_image_file,
    list_image_files,
    read_image,
    visible_entries,
)
from bgad.data.manifest import (
    ManifestRow,
    atomic_dataset_dir,
    count_rows,
    existing_dataset,
    raw_fingerprint,
    sha256_file,
    write_dataset_info,
    write_manifest,
)
from bgad.data.samples import NORMAL_TYPE

__all__ = [
    "AITEX_DEFECT_CODES",
    "AITEX_MASK_THRESHOLD",
    "CONVERTERS",
    "CONVERTER_VERSION",
    "prepare_aitex",
    "prepare_brainmri",
    "prepare_elpv",
    "prepare_headct",
    "split_normals",
]

#: Bumped whenever a converter's output for the same input changes (part of the idempotency key).
CONVERTER_VERSION = 1
TEST_SIZE = 0.25
ABNORMAL_TYPE = "defect"

AITEX_DEFECT_CODES: dict[str, str] = {
    "002": "broken_end",
    "006": "broken_yarn",
    "010": "broken_pick",
    "016": "weft_curling",
    "019": "fuzzyball",
    "022": "cut_selvage",
    "023": "crease",
    "025": "warp_ball",
    "027": "knots",
    "029": "contamination",
    "030": "nep",
    "036": "weft_crack",
}
AITEX_MASK_THRESHOLD = 128
AITEX_TILE = 256
#: Defect images known to have no mask at all: excluded (and recorded).
AITEX_NO_MASK = {
    "0100_025_08": "has no mask in Mask_images/ (known AITEX quirk); its tiles cannot be labelled"
}
#: Known stray files among the normal images: kept (with a note), see the module docstring.
AITEX_NODEFECT_STRAYS = {
    "NoDefect_images/2608691-202020u/0018_00_01.png": (
        "stray second image for index 0018 in 2608691-202020u (malformed name NNNN_DD_FF next to 0018_000_01.png); "
        "not a byte or pixel copy (mean abs. difference 15 grey levels, like any two images of that fabric), so "
        "it is kept as a normal image - as in DRA's AITEX split (141 normal images -> 2256 tiles -> 1692/564)"
    )
}
_AITEX_NAME = re.compile(r"^(\d{4})_(\d{3})_(\d{2})$")


# --------------------------------------------------------------------------------------------------
# shared helpers


def split_normals(items: list[str], seed: int) -> tuple[list[str], list[str]]:
    """Sorted ``items`` -> (train, test) by ``train_test_split(test_size=0.25, random_state=seed)``."""
    items = sorted(items)
    if len(items) < 2:
        raise DatasetError(f"need at least 2 normal images to make a train/test split, found {len(items)}.")
    train, test = train_test_split(items, test_size=TEST_SIZE, random_state=seed)
    return list(train), list(test)


def _require_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise DatasetError(
            f"{what} folder {path} does not exist; check --raw (it must be the unpacked raw copy)."
        )
    return path


def _raw_wording(what: str) -> StrayEntryWording:
    return StrayEntryWording(
        folder=f"unexpected folder {{path}} in {what} folder {{folder}}; move or delete it.",
        file=(
            f"unexpected file {{path}} in {what} folder {{folder}}: extension {{suffix}} is not one of "
            "{extensions} (any case). Convert or delete it; nothing is skipped silently."
        ),
    )


def _list_images(
    folder: Path,
    what: str,
    *,
    allow_dirs: frozenset[str] = frozenset(),
    allow_files: frozenset[str] = frozenset(),
) -> list[Path]:
    """Sorted image files of ``folder``; sub-folders (other than ``allow_dirs``) and other files are errors."""
    _require_dir(folder, what)

    def allowed(p: Path) -> bool:
        return (p.name in allow_files and p.is_file()) or (p.name in allow_dirs and p.is_dir())

    out = list_image_files(folder, _raw_wording(what), skip=allowed)
    if not out:
        raise DatasetError(f"{what} folder {folder} holds no images; check --raw.")
    return out


def _checked_copy(src: Path, dst: Path) -> None:
    read_image(src)  # full decode: a truncated/unreadable file raises DatasetError naming it
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)


@dataclass
class _Plan:
    """What a converter will write: (relative destination, split, label, defect, mask rel, writer)."""

    items: list[tuple[str, str, int, str, str, Callable[[Path], None]]] = field(default_factory=list)
    excluded: list[dict[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def add(
        self, rel: str, split: str, label: int, defect: str, write: Callable[[Path], None], mask: str = ""
    ):
        self.items.append((rel, split, label, defect, mask, write))

    def exclude(self, file: str, reason: str) -> None:
        self.excluded.append({"file": file, "reason": reason})


def _check_unique_outputs(name: str, plan: _Plan) -> None:
    dup = [r for r, n in Counter(it[0] for it in plan.items).items() if n > 1]
    if dup:
        raise DatasetError(
            f"{name}: two input files map to the same output {dup[0]}; rename one in the raw copy."
        )


def _write_plan(tmp: Path, plan: _Plan) -> list[ManifestRow]:
    """Write every planned file under ``tmp``; one manifest row (with its sha256) per file."""
    rows = []
    for rel, split, label, defect, mask, write in plan.items:
        dst = tmp / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        write(dst)
        rows.append(ManifestRow(rel, split, label, defect, mask, sha256_file(dst)))
    return rows


def _check_written(name: str, tmp: Path, root: Path, category: str, rows: list[ManifestRow]) -> None:
    """What is on disk must be exactly the plan: no file lost, none extra."""
    on_disk = sorted(
        p.relative_to(tmp).as_posix()
        for p in (tmp / category).rglob("*")
        if p.is_file() and "ground_truth" not in p.parts
    )
    masks_on_disk = sorted(
        p.relative_to(tmp).as_posix() for p in (tmp / category / "ground_truth").rglob("*") if p.is_file()
    )
    if on_disk != sorted(r.path for r in rows) or masks_on_disk != sorted(r.mask for r in rows if r.mask):
        raise DatasetError(
            f"{name}: the converted files in {tmp} do not match the plan ({len(on_disk)} images / "
            f"{len(masks_on_disk)} masks written, {len(rows)} planned); nothing was written to {root}."
        )


def _build(
    name: str,
    raw: Path,
    root: Path,
    seed: int,
    make_plan: Callable[[Path, int], _Plan],
    *,
    category: str,
    kind: str,
    has_pixel_masks: bool,
) -> Path:
    raw = Path(raw).expanduser().resolve()
    root = Path(root).expanduser().resolve()
    _require_dir(raw, f"raw {name}")
    identity = {
        "converter": name,
        "version": CONVERTER_VERSION,
        "seed": seed,
        "source_fingerprint": raw_fingerprint(raw),
    }
    if existing_dataset(root, name, identity):
        return root
    plan = make_plan(raw, seed)
    _check_unique_outputs(name, plan)
    with atomic_dataset_dir(root) as tmp:
        rows = _write_plan(tmp, plan)
        _check_written(name, tmp, root, category, rows)
        write_manifest(tmp, rows)
        conversion = {
            **identity,
            "source": str(raw),
            "split": f"sklearn train_test_split(sorted normals, test_size={TEST_SIZE}, random_state={seed})",
            "counts": count_rows(rows),
            "excluded": plan.excluded,
            "notes": plan.notes,
            **plan.extra,
        }
        write_dataset_info(tmp, name, has_pixel_masks, {category: kind}, conversion)
    return root


def _add_normals(plan: _Plan, category: str, normals: dict[str, Path], seed: int) -> None:
    """``normals``: output file name -> source; split on the sorted names."""
    train, test = split_normals(list(normals), seed)
    for split, names in (("train", train), ("test", test)):
        for n in sorted(names):
            src = normals[n]
            plan.add(
                f"{category}/{split}/{NORMAL_TYPE}/{n}",
                split,
                0,
                NORMAL_TYPE,
                lambda d, s=src: _checked_copy(s, d),
            )


# --------------------------------------------------------------------------------------------------
# AITEX


def _read_raw_aitex_mask(path: Path) -> np.ndarray:
    """Raw AITEX mask (grey, anti-aliased, sometimes LA) -> bool array, foreground = grey >= threshold."""
    try:
        img = Image.open(path)
        img.load()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DatasetError(
            f"cannot read mask {path}: {exc}; the file is corrupt or truncated - restore it."
        ) from exc
    if img.mode in ("LA", "PA"):
        img = img.getchannel(0) if img.mode == "LA" else img.convert("L")
    elif img.mode != "L":
        img = img.convert("L")
    return np.asarray(img) >= AITEX_MASK_THRESHOLD


def _to_tile_image(arr: np.ndarray) -> Image.Image:
    if arr.ndim == 3 and (arr[..., 0] == arr[..., 1]).all() and (arr[..., 0] == arr[..., 2]).all():
        return Image.fromarray(np.ascontiguousarray(arr[..., 0]), mode="L")
    return Image.fromarray(np.ascontiguousarray(arr))


class _AitexTiler:
    """Cuts AITEX images into tiles ``tile_width`` px wide, keeping one decoded image at a time."""

    def __init__(self, tile_width: int) -> None:
        self.tile_width = tile_width
        self._cache: dict[Path, np.ndarray] = {}

    def image(self, path: Path) -> np.ndarray:
        if path not in self._cache:
            self._cache.clear()  # tiles are written image by image; keep one decoded image only
            self._cache[path] = read_image(path)
        return self._cache[path]

    def n_tiles(self, path: Path, arr_shape: tuple[int, ...]) -> int:
        h, w = arr_shape[:2]
        if w % self.tile_width != 0 or w < self.tile_width:
            raise DatasetError(
                f"AITEX image {path} is {w}x{h}; its width is not a multiple of the {self.tile_width}-px tile width "
                "(expected 4096x256). Move it out of the raw copy (like Defect_images/unused/) or fix it."
            )
        return w // self.tile_width

    def columns(self, k: int) -> slice:
        return slice(k * self.tile_width, (k + 1) * self.tile_width)

    def writer(self, src: Path, k: int) -> Callable[[Path], None]:
        def write(dst: Path) -> None:
            _to_tile_image(self.image(src)[:, self.columns(k)]).save(dst)

        return write

    def defect_writer(self, src: Path, k: int, mtile: np.ndarray, mrel: str) -> Callable[[Path], None]:
        """Write tile ``k`` of ``src`` and its mask tile (0/255) at ``mrel`` in the same dataset folder."""

        def write(dst: Path) -> None:
            self.writer(src, k)(dst)
            mdst = dst.parents[3] / mrel
            mdst.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray((mtile * 255).astype(np.uint8), mode="L").save(mdst)

        return write


def _aitex_fabrics(normal_dir: Path) -> list[Path]:
    """The fabric folders of ``NoDefect_images``; a loose file there is an error."""
    fabrics = visible_entries(normal_dir)
    for p in fabrics:
        if not p.is_dir():
            raise DatasetError(
                f"unexpected file {p} in {normal_dir}; normal images live in NoDefect_images/<fabric-id>/."
            )
    if not fabrics:
        raise DatasetError(f"AITEX folder {normal_dir} holds no fabric folders; check --raw.")
    return fabrics


def _aitex_normal_tiles(
    raw: Path, normal_dir: Path, tiler: _AitexTiler, plan: _Plan
) -> tuple[dict[str, tuple[Path, int]], int]:
    """Output tile name -> (source image, tile index) for every normal image, and the number of images."""
    normal_tiles: dict[str, tuple[Path, int]] = {}
    n_images = 0
    for fab in _aitex_fabrics(normal_dir):
        for img in _list_images(fab, "AITEX NoDefect_images"):
            rel = img.relative_to(raw).as_posix()
            if rel in AITEX_NODEFECT_STRAYS:
                plan.notes.append(f"{rel}: {AITEX_NODEFECT_STRAYS[rel]}")
            elif img.suffix.lower() != ".png" or not _AITEX_NAME.match(img.stem):
                raise DatasetError(
                    f"unexpected AITEX normal image name {img} (expected NNNN_DDD_FF.png); rename or remove it - "
                    "nothing is skipped silently."
                )
            arr = tiler.image(img)
            n_images += 1
            for k in range(tiler.n_tiles(img, arr.shape)):
                normal_tiles[f"{fab.name}_{img.stem}_{k:02d}.png"] = (img, k)
    return normal_tiles, n_images


def _add_aitex_normals(
    plan: _Plan, cat: str, normal_tiles: dict[str, tuple[Path, int]], seed: int, tiler: _AitexTiler
) -> None:
    """Split the normal tiles on their sorted names, but plan them in source order (one decode per image)."""
    train, test = split_normals(list(normal_tiles), seed)
    split_of = {n: "train" for n in train} | {n: "test" for n in test}
    for n in sorted(normal_tiles, key=lambda n: (normal_tiles[n][0], normal_tiles[n][1])):
        src, k = normal_tiles[n]
        s = split_of[n]
        plan.add(f"{cat}/{s}/{NORMAL_TYPE}/{n}", s, 0, NORMAL_TYPE, tiler.writer(src, k))


def _exclude_aitex_unused(plan: _Plan, raw: Path, defect_dir: Path) -> None:
    if (defect_dir / "unused").is_dir():
        for p in sorted((defect_dir / "unused").rglob("*")):
            if p.is_file() and not p.name.startswith("."):
                plan.exclude(
                    p.relative_to(raw).as_posix(),
                    "in Defect_images/unused/ (set aside by the AITEX authors; 3796 px wide, not 4096): ignored",
                )


def _aitex_defect_type(img: Path) -> str:
    """The defect type named by the code in ``NNNN_DDD_FF.png``; any other name is an error."""
    m = _AITEX_NAME.match(img.stem)
    if img.suffix.lower() != ".png" or not m:
        raise DatasetError(
            f"unexpected AITEX defect image name {img} (expected NNNN_DDD_FF.png); rename or remove it."
        )
    code = m.group(2)
    if code not in AITEX_DEFECT_CODES:
        raise DatasetError(
            f"AITEX defect image {img} has defect code {code!r}, not one of {', '.join(sorted(AITEX_DEFECT_CODES))}; "
            "remove it or extend AITEX_DEFECT_CODES."
        )
    return AITEX_DEFECT_CODES[code]


def _aitex_mask_files(stem: str, masks_all: dict[str, Path]) -> list[Path]:
    """``<stem>_mask.png``, else every ``<stem>_maskN.png`` (their union is the mask); may be empty."""
    if f"{stem}_mask.png" in masks_all:
        return [masks_all[f"{stem}_mask.png"]]
    return [masks_all[n] for n in sorted(masks_all) if re.fullmatch(rf"{re.escape(stem)}_mask\d+\.png", n)]


def _aitex_union_mask(img: Path, mask_files: list[Path], shape: tuple[int, ...]) -> np.ndarray:
    h, w = shape[:2]
    mask = np.zeros((h, w), dtype=bool)
    for mf in mask_files:
        mm = _read_raw_aitex_mask(mf)
        if mm.shape != (h, w):
            raise DatasetError(
                f"AITEX mask {mf} is {mm.shape[1]}x{mm.shape[0]} but its image {img} is {w}x{h}; "
                "masks must have the image's size - fix or remove the pair."
            )
        mask |= mm
    return mask


@dataclass
class _AitexDefectStats:
    """Counts for ``bgad_dataset.json``: defect images used, tiles kept / dropped per defect type."""

    n_images: int = 0
    kept: Counter[str] = field(default_factory=Counter)
    dropped: Counter[str] = field(default_factory=Counter)
    used_masks: set[str] = field(default_factory=set)


def _add_aitex_defect_tiles(
    plan: _Plan,
    cat: str,
    img: Path,
    defect: str,
    mask: np.ndarray,
    tiler: _AitexTiler,
    stats: _AitexDefectStats,
) -> None:
    """Plan the tiles of one defect image whose mask tile is non-empty; count the dropped ones."""
    for k in range(tiler.n_tiles(img, mask.shape)):
        mtile = mask[:, tiler.columns(k)]
        if not mtile.any():
            stats.dropped[defect] += 1
            continue
        stats.kept[defect] += 1
        name = f"{img.stem}_{k:02d}"
        mrel = f"{cat}/ground_truth/{defect}/{name}_mask.png"
        write = tiler.defect_writer(img, k, mtile, mrel)
        plan.add(f"{cat}/test/{defect}/{name}.png", "test", 1, defect, write, mask=mrel)


def _add_aitex_defects(
    plan: _Plan, cat: str, raw: Path, tiler: _AitexTiler, masks_all: dict[str, Path]
) -> _AitexDefectStats:
    """Plan the labelled tiles of every defect image; a defect image without a mask is an error (or a known quirk)."""
    defect_dir, mask_dir = raw / "Defect_images", raw / "Mask_images"
    stats = _AitexDefectStats()
    for img in _list_images(defect_dir, "AITEX Defect_images", allow_dirs=frozenset({"unused"})):
        defect = _aitex_defect_type(img)
        stem = img.stem
        mask_files = _aitex_mask_files(stem, masks_all)
        if not mask_files:
            if stem in AITEX_NO_MASK:
                plan.exclude(img.relative_to(raw).as_posix(), AITEX_NO_MASK[stem])
                continue
            raise DatasetError(
                f"AITEX defect image {img} has no mask (expected {mask_dir / (stem + '_mask.png')} or _mask1/_mask2); "
                "restore the mask or move the image out of Defect_images/."
            )
        if len(mask_files) > 1:
            plan.notes.append(f"{stem}: mask = union of {', '.join(p.name for p in mask_files)}")
        stats.used_masks.update(p.name for p in mask_files)
        mask = _aitex_union_mask(img, mask_files, tiler.image(img).shape)
        stats.n_images += 1
        _add_aitex_defect_tiles(plan, cat, img, defect, mask, tiler, stats)
    return stats


def _aitex_plan(raw: Path, seed: int, tile_width: int = AITEX_TILE) -> _Plan:
    plan = _Plan()
    cat = "aitex"
    defect_dir = _require_dir(raw / "Defect_images", "AITEX Defect_images")
    mask_dir = _require_dir(raw / "Mask_images", "AITEX Mask_images")
    normal_dir = _require_dir(raw / "NoDefect_images", "AITEX NoDefect_images")
    tiler = _AitexTiler(tile_width)
    normal_tiles, n_normal_images = _aitex_normal_tiles(raw, normal_dir, tiler, plan)
    _add_aitex_normals(plan, cat, normal_tiles, seed, tiler)
    _exclude_aitex_unused(plan, raw, defect_dir)
    masks_all = {p.name: p for p in _list_images(mask_dir, "AITEX Mask_images")}
    stats = _add_aitex_defects(plan, cat, raw, tiler, masks_all)
    for n in sorted(set(masks_all) - stats.used_masks):
        plan.exclude(f"Mask_images/{n}", "mask without a (used) defect image in Defect_images/: ignored")
    dropped_total = sum(stats.dropped.values())
    plan.extra = {
        "tile_width": tile_width,
        "mask_threshold": AITEX_MASK_THRESHOLD,
        "source_images": {"normal": n_normal_images, "defect": stats.n_images},
        "defect_tiles_kept": dict(sorted(stats.kept.items())),
        "dropped_empty_mask_tiles": dict(sorted(stats.dropped.items())),
        "dropped_empty_mask_tiles_total": dropped_total,
    }
    plan.notes.append(
        f"{dropped_total} defect tiles with an empty mask tile dropped (per defect type in "
        "dropped_empty_mask_tiles)"
    )
    return plan


def prepare_aitex(raw: Path, root: Path, seed: int = 42, *, tile_width: int = AITEX_TILE) -> Path:
    """Convert the raw AITEX copy (``Defect_images/``, ``Mask_images/``, ``NoDefect_images/``) to ``root``."""
    return _build(
        "aitex", raw, root, seed, lambda r, s: _aitex_plan(r, s, tile_width),
        category="aitex", kind="texture", has_pixel_masks=True,
    )  # fmt: skip


# --------------------------------------------------------------------------------------------------
# ELPV


def _find_file(raw: Path, candidates: list[str], what: str) -> Path:
    for c in candidates:
        if (raw / c).is_file():
            return raw / c
    raise DatasetError(f"no {what} found in {raw} (looked for {', '.join(candidates)}); check --raw.")


def _elpv_row(labels: Path, lineno: int, line: str) -> tuple[Path, str, float, str]:
    """One line of ``labels.csv``: (image file, its name as listed, defect probability, cell type).

    Checked here so that a bad line stops the conversion with its file and line number, before
    anything is written.
    """
    parts = line.split()
    if len(parts) != 3:
        raise DatasetError(
            f"{labels}:{lineno}: expected 'images/cellNNNN.png  <probability>  mono|poly', got {line!r}."
        )
    rel, prob_s, typ = parts
    try:
        prob = float(prob_s)
    except ValueError as exc:
        raise DatasetError(f"{labels}:{lineno}: defect probability {prob_s!r} is not a number.") from exc
    if typ not in ("mono", "poly"):
        raise DatasetError(f"{labels}:{lineno}: cell type {typ!r} is neither 'mono' nor 'poly'.")
    src = labels.parent / rel
    if not src.is_file():
        raise DatasetError(f"{labels}:{lineno}: image {src} is listed but missing; restore the raw copy.")
    return src, rel, prob, typ


def _elpv_plan(raw: Path, seed: int) -> _Plan:
    plan = _Plan()
    cat = "elpv"
    labels = _find_file(
        raw, ["labels.csv", "data/labels.csv", "src/elpv_dataset/data/labels.csv"], "ELPV labels.csv"
    )
    base = labels.parent
    normals: dict[str, Path] = {}
    uncertain: Counter[str] = Counter()
    listed: set[Path] = set()
    for lineno, line in enumerate(labels.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        src, rel, prob, typ = _elpv_row(labels, lineno, line)
        if src in listed:
            raise DatasetError(f"{labels}:{lineno}: image {rel} is listed twice.")
        listed.add(src)
        if prob == 0.0:
            normals[src.name] = src
        elif prob == 1.0:
            plan.add(f"{cat}/test/{typ}/{src.name}", "test", 1, typ, lambda d, s=src: _checked_copy(s, d))
        elif 0.0 < prob < 1.0:
            uncertain[f"{prob:.4f}"] += 1
        else:
            raise DatasetError(f"{labels}:{lineno}: defect probability {prob} is outside [0, 1].")
    if not listed:
        raise DatasetError(f"{labels} lists no images; check --raw.")
    img_dir = base / "images"
    if img_dir.is_dir():
        for p in _list_images(img_dir, "ELPV images"):
            if p not in listed:
                plan.exclude(p.relative_to(raw).as_posix(), "image not listed in labels.csv: left out")
    _add_normals(plan, cat, normals, seed)
    plan.extra = {
        "uncertain_left_out": dict(sorted(uncertain.items())),
        "uncertain_left_out_total": sum(uncertain.values()),
    }
    plan.notes.append(
        f"{sum(uncertain.values())} images with 0 < probability < 1 left out (see uncertain_left_out)"
    )
    return plan


def prepare_elpv(raw: Path, root: Path, seed: int = 42) -> Path:
    """Convert the raw ELPV copy (``labels.csv`` + ``images/``) to ``root`` (category ``elpv``)."""
    return _build("elpv", raw, root, seed, _elpv_plan, category="elpv", kind="texture", has_pixel_masks=False)


# --------------------------------------------------------------------------------------------------
# BrainMRI


def _brainmri_plan(raw: Path, seed: int) -> _Plan:
    plan = _Plan()
    cat = "brainmri"
    base = raw
    if not (raw / "no").is_dir() and (raw / "brain_tumor_dataset" / "no").is_dir():
        base = raw / "brain_tumor_dataset"
    no = _list_images(base / "no", "BrainMRI no (normal)")
    yes = _list_images(base / "yes", "BrainMRI yes (tumour)")
    for p in visible_entries(base):
        if p.name not in ("no", "yes"):
            raise DatasetError(
                f"unexpected entry {p} in {base}; a BrainMRI raw copy holds only no/ and yes/."
            )
    _add_normals(plan, cat, {p.name: p for p in no}, seed)
    for p in yes:
        plan.add(
            f"{cat}/test/{ABNORMAL_TYPE}/{p.name}",
            "test",
            1,
            ABNORMAL_TYPE,
            lambda d, s=p: _checked_copy(s, d),
        )
    exts = Counter(p.suffix for p in (*no, *yes))
    plan.extra = {
        "source_extensions": dict(sorted(exts.items())),
        "source_counts": {"no": len(no), "yes": len(yes)},
    }
    return plan


def prepare_brainmri(raw: Path, root: Path, seed: int = 42) -> Path:
    """Convert the raw BrainMRI copy (``no/``, ``yes/``; any image extension, any case) to ``root``."""
    return _build(
        "brainmri", raw, root, seed, _brainmri_plan, category="brainmri", kind="object", has_pixel_masks=False
    )


# --------------------------------------------------------------------------------------------------
# HeadCT


def _headct_image_dir(raw: Path) -> Path:
    """The first of ``head_ct/head_ct``, ``head_ct``, ``raw`` that holds image files."""
    for c in (raw / "head_ct" / "head_ct", raw / "head_ct", raw):
        if c.is_dir() and any(is_image_file(p) for p in c.iterdir() if p.is_file()):
            return c
    raise DatasetError(
        f"no HeadCT images found in {raw}: expected head_ct/head_ct/NNN.png or head_ct/NNN.png; check --raw."
    )


def _headct_images(raw: Path, img_dir: Path, labels: Path) -> dict[int, Path]:
    """Image id (the numeric stem) -> image file."""
    allow = frozenset({"head_ct"}) if img_dir in (raw, raw / "head_ct") else frozenset()
    images: dict[int, Path] = {}
    for p in _list_images(img_dir, "HeadCT images", allow_dirs=allow, allow_files=frozenset({labels.name})):
        if not p.stem.isdigit():
            raise DatasetError(f"unexpected HeadCT image name {p} (expected NNN.png); rename or remove it.")
        if int(p.stem) in images:
            raise DatasetError(f"two HeadCT images with id {int(p.stem)}: {images[int(p.stem)]} and {p}.")
        images[int(p.stem)] = p
    return images


def _headct_labels(labels: Path) -> dict[int, int]:
    """Image id -> hemorrhage (0/1) from ``labels.csv`` (header ``id, hemorrhage``)."""
    with open(labels, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    if not rows or [c.strip().lower() for c in rows[0]] != ["id", "hemorrhage"]:
        raise DatasetError(
            f"{labels}: expected the header 'id, hemorrhage', got {rows[0] if rows else 'an empty file'}."
        )
    labels_of: dict[int, int] = {}
    for lineno, r in enumerate(rows[1:], 2):
        if not r or not "".join(r).strip():
            continue
        try:
            i, y = int(r[0].strip()), int(float(r[1].strip()))
        except (ValueError, IndexError) as exc:
            raise DatasetError(f"{labels}:{lineno}: cannot parse {r!r} as 'id, hemorrhage'.") from exc
        if y not in (0, 1):
            raise DatasetError(f"{labels}:{lineno}: hemorrhage must be 0 or 1, got {y}.")
        if i in labels_of:
            raise DatasetError(f"{labels}:{lineno}: id {i} appears twice.")
        labels_of[i] = y
    return labels_of


def _check_headct_pairs(
    images: dict[int, Path], labels_of: dict[int, int], labels: Path, img_dir: Path
) -> None:
    """Every image has a label and every label an image."""
    no_label = sorted(set(images) - set(labels_of))
    no_image = sorted(set(labels_of) - set(images))
    if no_label:
        raise DatasetError(
            f"HeadCT image(s) without a label in {labels}: {', '.join(images[i].name for i in no_label[:10])}."
        )
    if no_image:
        raise DatasetError(
            f"{labels} lists id(s) with no image in {img_dir}: {', '.join(map(str, no_image[:10]))}."
        )


def _headct_plan(raw: Path, seed: int) -> _Plan:
    plan = _Plan()
    cat = "headct"
    labels = _find_file(raw, ["labels.csv", "head_ct/labels.csv"], "HeadCT labels.csv")
    img_dir = _headct_image_dir(raw)
    images = _headct_images(raw, img_dir, labels)
    labels_of = _headct_labels(labels)
    _check_headct_pairs(images, labels_of, labels, img_dir)
    _add_normals(plan, cat, {images[i].name: images[i] for i in images if labels_of[i] == 0}, seed)
    for i in sorted(images):
        if labels_of[i] == 1:
            p = images[i]
            plan.add(
                f"{cat}/test/{ABNORMAL_TYPE}/{p.name}",
                "test",
                1,
                ABNORMAL_TYPE,
                lambda d, s=p: _checked_copy(s, d),
            )
    plan.extra = {"image_folder": img_dir.relative_to(raw).as_posix() or "."}
    return plan


def prepare_headct(raw: Path, root: Path, seed: int = 42) -> Path:
    """Convert the raw HeadCT copy (``labels.csv`` + ``head_ct/head_ct/NNN.png`` or ``head_ct/NNN.png``)."""
    return _build(
        "headct", raw, root, seed, _headct_plan, category="headct", kind="object", has_pixel_masks=False
    )


CONVERTERS: dict[str, Callable[..., Path]] = {
    "aitex": prepare_aitex,
    "elpv": prepare_elpv,
    "brainmri": prepare_brainmri,
    "headct": prepare_headct,
}
