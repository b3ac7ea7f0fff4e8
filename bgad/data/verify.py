"""Checking a prepared dataset folder: ``verify_dataset(name, root) -> list of problems`` (empty = fine).

What is checked (every problem names the file and says what to do):

* layout: category folders present (for MVTec AD and BTAD: exactly the official ones), no unexpected
  files (unknown extensions) or folders, no empty image folders; plain text files beside the
  categories (MVTec AD's own ``license.txt`` and ``readme.txt``) are documentation, not strays;
* every category has normal and anomalous test images (an AUROC needs both);
* counts against the official numbers where known (protocols/datasets.toml; AITEX: what our converter produces
  from the official raw copy with seed 42, which equals DRA's 1692/564/183);
* every image fully decodes (truncated/unreadable files are found);
* every anomalous image of a dataset with pixel masks has a mask that decodes, is binary and has
  the image's size;
* ``manifest.csv`` (when present): every listed file exists with its recorded sha256, and no image
  on disk is missing from it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

from bgad.data.btad import list_btad_categories
from bgad.data.datasets import load_category
from bgad.data.images import DatasetError, is_image_file, read_image, read_mask
from bgad.data.manifest import DATASET_INFO_FILE, MANIFEST_FILE, read_manifest, sha256_file
from bgad.data.mvtec import list_categories, prepare_hint
from bgad.data.samples import NORMAL_TYPE, CategoryData
from bgad.data.specs import DATASET_SPECS

__all__ = ["OFFICIAL_COUNTS", "verify_dataset"]

#: dataset -> category -> (train, test normal, test anomalous); None = not fixed (protocols/datasets.toml).
OFFICIAL_COUNTS: dict[str, dict[str, tuple[int | None, int | None, int | None]]] = {
    n: {c: (k.train, k.test_normal, k.test_anomalous) for c, k in DATASET_SPECS.get(n).counts.items()}
    for n in DATASET_SPECS.names()
    if DATASET_SPECS.get(n).source in ("archive", "raw")
}

#: Documentation shipped inside a dataset (MVTec AD has ``license.txt`` and ``readme.txt`` in every
#: category folder): accepted beside the split folders, never inside an image folder.
_DOC_SUFFIXES = frozenset({".txt", ".md", ".rst"})


def _scan_layout(cat_dir: Path) -> list[str]:
    """Unexpected files/folders and empty image folders below a category folder."""
    problems = []
    for dirpath, dirnames, filenames in os.walk(cat_dir):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        d = Path(dirpath)
        visible = sorted(f for f in filenames if not f.startswith("."))
        depth = len(d.relative_to(cat_dir).parts)
        for f in visible:
            p = d / f
            if depth == 0 and p.suffix.lower() in _DOC_SUFFIXES:
                continue
            if depth < 2:
                problems.append(
                    f"unexpected file {p}: files belong in <split>/<type>/ folders; move it out of the dataset folder."
                )
            elif not is_image_file(p):
                problems.append(
                    f"unexpected file {p}: extension {p.suffix or '(none)'!r} is not an image type; "
                    "convert it or move it out of the dataset folder."
                )
        if depth == 2 and not visible and not dirnames:
            problems.append(
                f"empty folder {d}: it holds no images; re-prepare the dataset, or move the empty folder out."
            )
        if depth >= 2 and dirnames:
            problems.append(
                f"unexpected folder(s) {', '.join(str(d / n) for n in dirnames)} inside an image folder."
            )
            dirnames[:] = []
    return problems


def _check_counts(name: str, category: str, data: CategoryData) -> list[str]:
    exp = OFFICIAL_COUNTS.get(name, {}).get(category)
    if exp is None:
        return []
    got = (
        len(data.train),
        sum(1 for s in data.test if not s.is_anomalous),
        sum(1 for s in data.test if s.is_anomalous),
    )
    out = []
    for what, e, g in zip(
        ("train images", "normal test images", "anomalous test images"), exp, got, strict=True
    ):
        if e is not None and e != g:
            out.append(
                f"{name}/{category}: {g} {what}, the official count is {e}; the copy is incomplete or "
                f"different - re-prepare it (`bgad-bench data prepare {name}`)."
            )
    return out


def _check_test_kinds(data: CategoryData) -> list[str]:
    """A test set without normal (or anomalous) images gives no AUROC, whatever -k a run uses."""
    test_dir = data.root / data.category / "test"
    if not any(not s.is_anomalous for s in data.test):
        return [
            f"{data.dataset}/{data.category}: no normal test images; add some to {test_dir / NORMAL_TYPE} "
            "(an AUROC needs normal and anomalous test images)."
        ]
    if not any(s.is_anomalous for s in data.test):
        return [
            f"{data.dataset}/{data.category}: no anomalous test images; add them to {test_dir}/<defect type> "
            "(an AUROC needs normal and anomalous test images)."
        ]
    return []


def _check_pixels(data: CategoryData) -> list[str]:
    problems = []
    for s in (*data.train, *data.test):
        try:
            img = read_image(s.image_path)
        except DatasetError as exc:
            problems.append(str(exc))
            continue
        if not (data.has_pixel_masks and s.is_anomalous):
            continue
        if s.mask_path is None:
            problems.append(f"defect image {s.image_path} has no mask; restore it or re-prepare the dataset.")
            continue
        try:
            read_mask(s.mask_path, expected_size=(img.shape[1], img.shape[0]))
        except DatasetError as exc:
            problems.append(str(exc))
    return problems


def _check_manifest(root: Path) -> list[str]:
    try:
        rows = read_manifest(root)
    except DatasetError as exc:
        return [str(exc)]
    problems = []
    listed = set()
    for r in rows:
        listed.add(r.path)
        p = root / r.path
        if not p.is_file():
            problems.append(f"{p} is listed in {MANIFEST_FILE} but missing; re-prepare the dataset.")
        elif sha256_file(p) != r.sha256:
            problems.append(
                f"{p} has changed since preparation (sha256 differs from {MANIFEST_FILE}); re-prepare it."
            )
        if r.mask and not (root / r.mask).is_file():
            problems.append(
                f"mask {root / r.mask} is listed in {MANIFEST_FILE} but missing; re-prepare the dataset."
            )
    masks = {r.mask for r in rows if r.mask}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for f in filenames:
            p = Path(dirpath) / f
            rel = p.relative_to(root).as_posix()
            if f.startswith(".") or rel in (MANIFEST_FILE, DATASET_INFO_FILE) or not is_image_file(p):
                continue
            if rel not in listed and rel not in masks:
                problems.append(
                    f"{p} is not listed in {MANIFEST_FILE} (added by hand?); remove it or re-prepare."
                )
    return problems


def _identity_problem(name: str, root: Path) -> str | None:
    """A prepared dataset says what it is in its own ``bgad_dataset.json``: check it is ``name``."""
    spec = DATASET_SPECS.get(name)
    if spec.source not in ("archive", "raw"):
        return None  # generated or the user's own folder: no identity to check
    info_path = root / DATASET_INFO_FILE
    try:
        info = json.loads(info_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        if spec.source == "archive":
            return None  # an extracted official copy: its categories and counts are checked instead
        return (
            f"{root} has no {DATASET_INFO_FILE}: it was not prepared by bgad-bench, so it cannot be checked "
            f"as {spec.title}; prepare it with `bgad-bench data prepare {name}`, or use it as your own data "
            f"(`--dataset folder --data-root {root}`, `bgad-bench data verify folder --data-root {root}`)."
        )
    except (OSError, json.JSONDecodeError) as exc:
        return (
            f"cannot read {info_path}: {exc}; re-prepare the dataset with `bgad-bench data prepare {name}`."
        )
    found = info.get("name")
    if found != name:
        return (
            f"{root} holds the {found!r} dataset (its {DATASET_INFO_FILE} says so), not {name!r}; "
            f"verify it with `bgad-bench data verify {found} --data-root {root}`, or give the {name} folder."
        )
    return None


def _check_category(name: str, root: Path, cat: str, check_counts: bool) -> list[str]:
    """Layout, test-set kinds, counts and pixels of one category (the loader's error if it cannot load)."""
    problems = _scan_layout(root / cat)
    try:
        data = load_category(name, cat, root)  # as a cell reads it
    except DatasetError as exc:
        return [*problems, str(exc)]
    if check_counts:
        problems.extend(_check_counts(name, cat, data))
    return problems + _check_test_kinds(data) + _check_pixels(data)


def verify_dataset(
    name: str,
    root: Path,
    *,
    check_counts: bool = True,
    progress: Callable[[str], None] | None = None,
) -> list[str]:
    """Problems found in the prepared dataset ``name`` at ``root`` (``[]`` when it is fine)."""
    root = Path(root).expanduser()
    if not root.is_dir():
        return [f"dataset folder {root} does not exist; {prepare_hint(name, root)}."]
    identity = _identity_problem(name, root)
    if identity:
        return [identity]
    problems: list[str] = []
    try:
        cats = list_btad_categories(root) if name == "btad" else list_categories(root, dataset=name)
    except DatasetError as exc:
        return [str(exc)]
    official = OFFICIAL_COUNTS.get(name)
    if check_counts and official:
        expected = sorted(official)
        missing = sorted(set(expected) - set(cats))
        extra = sorted(set(cats) - set(expected))
        if missing:
            problems.append(
                f"{name}: categories missing in {root}: {', '.join(missing)}; re-prepare the dataset."
            )
        if extra:
            problems.append(f"{name}: unexpected category folders in {root}: {', '.join(extra)}.")
    for cat in cats:
        if progress:
            progress(cat)
        problems.extend(p for p in _check_category(name, root, cat, check_counts) if p not in problems)
    if (root / MANIFEST_FILE).is_file():
        problems.extend(_check_manifest(root))
    return problems
