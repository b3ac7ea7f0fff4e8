"""Converters from the raw AITEX, ELPV, BrainMRI and HeadCT copies to the MVTec layout (DATASETS.md).

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

from bgad.data.images import IMAGE_EXTENSIONS, DatasetError, is_image_file, read_image
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


def _visible(folder: Path) -> list[Path]:
    return sorted((p for p in folder.iterdir() if not p.name.startswith(".")), key=lambda p: p.name)


def _list_images(
    folder: Path,
    what: str,
    *,
    allow_dirs: frozenset[str] = frozenset(),
    allow_files: frozenset[str] = frozenset(),
) -> list[Path]:
    """Sorted image files of ``folder``; sub-folders (other than ``allow_dirs``) and other files are errors."""
    _require_dir(folder, what)
    out = []
    for p in _visible(folder):
        if p.name in allow_files and p.is_file():
            continue
        if p.is_dir():
            if p.name in allow_dirs:
                continue
            raise DatasetError(f"unexpected folder {p} in {what} folder {folder}; move or delete it.")
        if not is_image_file(p):
            raise DatasetError(
                f"unexpected file {p} in {what} folder {folder}: extension {p.suffix or '(none)'!r} is not one of "
                f"{', '.join(sorted(IMAGE_EXTENSIONS))} (any case). Convert or delete it; nothing is skipped silently."
            )
        out.append(p)
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
    rels = [it[0] for it in plan.items]
    dup = [r for r, n in Counter(rels).items() if n > 1]
    if dup:
        raise DatasetError(
            f"{name}: two input files map to the same output {dup[0]}; rename one in the raw copy."
        )
    with atomic_dataset_dir(root) as tmp:
        rows = []
        for rel, split, label, defect, mask, write in plan.items:
            dst = tmp / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            write(dst)
            rows.append(ManifestRow(rel, split, label, defect, mask, sha256_file(dst)))
        # count check: what is on disk must be exactly the plan
        on_disk = sorted(
            p.relative_to(tmp).as_posix()
            for p in (tmp / category).rglob("*")
            if p.is_file() and "ground_truth" not in p.parts
        )
        masks_on_disk = sorted(
            p.relative_to(tmp).as_posix() for p in (tmp / category / "ground_truth").rglob("*") if p.is_file()
        )
        if on_disk != sorted(rels) or masks_on_disk != sorted(r.mask for r in rows if r.mask):
            raise DatasetError(
                f"{name}: the converted files in {tmp} do not match the plan ({len(on_disk)} images / "
                f"{len(masks_on_disk)} masks written, {len(rels)} planned); nothing was written to {root}."
            )
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


def _aitex_plan(raw: Path, seed: int, tile_width: int = AITEX_TILE) -> _Plan:
    plan = _Plan()
    cat = "aitex"
    defect_dir = _require_dir(raw / "Defect_images", "AITEX Defect_images")
    mask_dir = _require_dir(raw / "Mask_images", "AITEX Mask_images")
    normal_dir = _require_dir(raw / "NoDefect_images", "AITEX NoDefect_images")

    cache: dict[Path, np.ndarray] = {}

    def image(path: Path) -> np.ndarray:
        if path not in cache:
            cache.clear()  # tiles are written image by image; keep one decoded image only
            cache[path] = read_image(path)
        return cache[path]

    def n_tiles(path: Path, arr_shape: tuple[int, ...]) -> int:
        h, w = arr_shape[:2]
        if w % tile_width != 0 or w < tile_width:
            raise DatasetError(
                f"AITEX image {path} is {w}x{h}; its width is not a multiple of the {tile_width}-px tile width "
                "(expected 4096x256). Move it out of the raw copy (like Defect_images/unused/) or fix it."
            )
        return w // tile_width

    # --- normal images -------------------------------------------------------------------------------
    fabrics = [p for p in _visible(normal_dir)]
    for p in fabrics:
        if not p.is_dir():
            raise DatasetError(
                f"unexpected file {p} in {normal_dir}; normal images live in NoDefect_images/<fabric-id>/."
            )
    if not fabrics:
        raise DatasetError(f"AITEX folder {normal_dir} holds no fabric folders; check --raw.")
    normal_tiles: dict[str, tuple[Path, int]] = {}
    n_normal_images = 0
    for fab in fabrics:
        for img in _list_images(fab, "AITEX NoDefect_images"):
            rel = img.relative_to(raw).as_posix()
            if rel in AITEX_NODEFECT_STRAYS:
                plan.notes.append(f"{rel}: {AITEX_NODEFECT_STRAYS[rel]}")
            elif img.suffix.lower() != ".png" or not _AITEX_NAME.match(img.stem):
                raise DatasetError(
                    f"unexpected AITEX normal image name {img} (expected NNNN_DDD_FF.png); rename or remove it - "
                    "nothing is skipped silently."
                )
            arr = image(img)
            n_normal_images += 1
            for k in range(n_tiles(img, arr.shape)):
                normal_tiles[f"{fab.name}_{img.stem}_{k:02d}.png"] = (img, k)
    train, test = split_normals(list(normal_tiles), seed)

    def tile_writer(src: Path, k: int) -> Callable[[Path], None]:
        def write(dst: Path) -> None:
            arr = image(src)
            _to_tile_image(arr[:, k * tile_width : (k + 1) * tile_width]).save(dst)

        return write

    # write in source order (one decode per image), but split assignment comes from the sorted names
    split_of = {n: "train" for n in train} | {n: "test" for n in test}
    for n in sorted(normal_tiles, key=lambda n: (normal_tiles[n][0], normal_tiles[n][1])):
        src, k = normal_tiles[n]
        s = split_of[n]
        plan.add(f"{cat}/{s}/{NORMAL_TYPE}/{n}", s, 0, NORMAL_TYPE, tile_writer(src, k))

    # --- defect images -------------------------------------------------------------------------------
    if (defect_dir / "unused").is_dir():
        for p in sorted((defect_dir / "unused").rglob("*")):
            if p.is_file() and not p.name.startswith("."):
                plan.exclude(
                    p.relative_to(raw).as_posix(),
                    "in Defect_images/unused/ (set aside by the AITEX authors; 3796 px wide, not 4096): ignored",
                )
    masks_all = {p.name: p for p in _list_images(mask_dir, "AITEX Mask_images")}
    used_masks: set[str] = set()
    dropped: Counter[str] = Counter()
    kept: Counter[str] = Counter()
    n_defect_images = 0
    for img in _list_images(defect_dir, "AITEX Defect_images", allow_dirs=frozenset({"unused"})):
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
        defect = AITEX_DEFECT_CODES[code]
        stem = img.stem
        if f"{stem}_mask.png" in masks_all:
            mask_files = [masks_all[f"{stem}_mask.png"]]
        else:
            mask_files = [
                masks_all[n] for n in sorted(masks_all) if re.fullmatch(rf"{re.escape(stem)}_mask\d+\.png", n)
            ]
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
        used_masks.update(p.name for p in mask_files)
        arr = image(img)
        h, w = arr.shape[:2]
        mask = np.zeros((h, w), dtype=bool)
        for mf in mask_files:
            mm = _read_raw_aitex_mask(mf)
            if mm.shape != (h, w):
                raise DatasetError(
                    f"AITEX mask {mf} is {mm.shape[1]}x{mm.shape[0]} but its image {img} is {w}x{h}; "
                    "masks must have the image's size - fix or remove the pair."
                )
            mask |= mm
        n_defect_images += 1
        for k in range(n_tiles(img, arr.shape)):
            mtile = mask[:, k * tile_width : (k + 1) * tile_width]
            if not mtile.any():
                dropped[defect] += 1
                continue
            kept[defect] += 1
            name = f"{stem}_{k:02d}"
            mrel = f"{cat}/ground_truth/{defect}/{name}_mask.png"

            def write(dst: Path, src=img, k=k, mtile=mtile, mrel=mrel) -> None:
                tile_writer(src, k)(dst)
                mdst = dst.parents[3] / mrel
                mdst.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray((mtile * 255).astype(np.uint8), mode="L").save(mdst)

            plan.add(f"{cat}/test/{defect}/{name}.png", "test", 1, defect, write, mask=mrel)
    for n in sorted(set(masks_all) - used_masks):
        plan.exclude(f"Mask_images/{n}", "mask without a (used) defect image in Defect_images/: ignored")
    plan.extra = {
        "tile_width": tile_width,
        "mask_threshold": AITEX_MASK_THRESHOLD,
        "source_images": {"normal": n_normal_images, "defect": n_defect_images},
        "defect_tiles_kept": dict(sorted(kept.items())),
        "dropped_empty_mask_tiles": dict(sorted(dropped.items())),
        "dropped_empty_mask_tiles_total": sum(dropped.values()),
    }
    plan.notes.append(
        f"{sum(dropped.values())} defect tiles with an empty mask tile dropped (per defect type in "
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
    n_defect = Counter()
    for lineno, line in enumerate(labels.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
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
        src = base / rel
        if not src.is_file():
            raise DatasetError(f"{labels}:{lineno}: image {src} is listed but missing; restore the raw copy.")
        if src in listed:
            raise DatasetError(f"{labels}:{lineno}: image {rel} is listed twice.")
        listed.add(src)
        if prob == 0.0:
            normals[src.name] = src
        elif prob == 1.0:
            n_defect[typ] += 1
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
    for p in _visible(base):
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


def _headct_plan(raw: Path, seed: int) -> _Plan:
    plan = _Plan()
    cat = "headct"
    labels = _find_file(raw, ["labels.csv", "head_ct/labels.csv"], "HeadCT labels.csv")
    img_dir = None
    for c in (raw / "head_ct" / "head_ct", raw / "head_ct", raw):
        if c.is_dir() and any(is_image_file(p) for p in c.iterdir() if p.is_file()):
            img_dir = c
            break
    if img_dir is None:
        raise DatasetError(
            f"no HeadCT images found in {raw}: expected head_ct/head_ct/NNN.png or head_ct/NNN.png; check --raw."
        )
    allow = frozenset({"head_ct"}) if img_dir in (raw, raw / "head_ct") else frozenset()
    images = {}
    for p in _list_images(img_dir, "HeadCT images", allow_dirs=allow, allow_files=frozenset({labels.name})):
        if not p.stem.isdigit():
            raise DatasetError(f"unexpected HeadCT image name {p} (expected NNN.png); rename or remove it.")
        if int(p.stem) in images:
            raise DatasetError(f"two HeadCT images with id {int(p.stem)}: {images[int(p.stem)]} and {p}.")
        images[int(p.stem)] = p
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
