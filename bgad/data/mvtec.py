"""Reader for the MVTec AD folder layout (also used by every converted dataset and the synthetic set).

Layout::

    <root>/<category>/train/good/*
    <root>/<category>/test/good/*, <root>/<category>/test/<defect>/*
    <root>/<category>/ground_truth/<defect>/<stem>_mask.png      (only where pixel masks exist)
    <root>/bgad_dataset.json                                      (optional, see below)

``bgad_dataset.json`` (written by our converters and the synthetic generator) may say
``{"name": str, "has_pixel_masks": bool, "categories": {name: {"kind": "texture" | "object"}}}``.

Only file *names* are checked here (fast: no image is opened); pixel content (decodability, binary
masks, mask size) is validated when the images are read (:mod:`bgad.data.images`).
Hidden entries (names starting with ``.``, e.g. ``.DS_Store``) are skipped; every other unexpected
file or folder is an error that names it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bgad.data.images import DatasetError, StrayEntryWording, is_image_file, list_image_files, visible_entries
from bgad.data.samples import NORMAL_TYPE, CategoryData, Sample
from bgad.data.specs import DATASET_SPECS

__all__ = [
    "DATASET_INFO_FILE",
    "MVTEC_CATEGORIES",
    "MVTEC_TEXTURE_CATEGORIES",
    "list_categories",
    "load_mvtec_category",
    "prepare_hint",
    "read_dataset_info",
]

DATASET_INFO_FILE = "bgad_dataset.json"

MVTEC_TEXTURE_CATEGORIES: frozenset[str] = DATASET_SPECS.get("mvtec").texture
MVTEC_CATEGORIES: tuple[str, ...] = DATASET_SPECS.get("mvtec").categories

_KINDS = ("texture", "object")

_WORDING = StrayEntryWording(
    folder=(
        "unexpected folder {path} inside image folder {folder}; image folders must hold image files only "
        "(move it out of the dataset folder)."
    ),
    file=(
        "unexpected file {path} in image folder {folder}: extension {suffix} is not one of "
        "{extensions} (any case). Convert it or move it out of the dataset folder; "
        "files are never silently skipped."
    ),
)


def prepare_hint(dataset: str | None, root: Path | None = None) -> str:
    """What to do about a missing or incomplete ``dataset`` folder: the command that makes or checks it.

    Your own folder (``folder``) is never prepared by us: its hint names the layout it needs and the
    command that checks it, not a ``data prepare`` that would reject it.
    """
    name = dataset or "<dataset>"
    if name == "folder":
        where = root if root is not None else "DIR"
        return (
            f"your own folder {where} needs <category>/train/good, <category>/test/good and "
            f"<category>/test/<defect type> (docs/datasets.md); check it with "
            f"`bgad-bench data verify folder --data-root {where}`"
        )
    if name in ("mvtec", "btad"):
        how = (
            f"download it with `bgad-bench data download {name}` (or, with the archive at hand, "
            f"`bgad-bench data prepare {name} --archive FILE`)"
        )
    elif name == "synthetic":
        how = "it is generated automatically by `bgad.data.synthetic.ensure_synthetic_dataset()`"
    else:
        how = f"convert the raw copy with `bgad-bench data prepare {name} --raw DIR`"
    return f"{how}, or pass the folder that holds the categories (or set BGAD_DATA_DIR)"


def read_dataset_info(root: Path) -> dict[str, Any] | None:
    """The parsed ``<root>/bgad_dataset.json`` (validated), or ``None`` when there is none."""
    path = Path(root) / DATASET_INFO_FILE
    if not path.is_file():
        return None
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DatasetError(f"cannot parse {path}: {exc}. Fix or delete the file (it is optional).") from exc
    if not isinstance(info, dict):
        raise DatasetError(f"{path} must hold a JSON object, got {type(info).__name__}.")
    if "has_pixel_masks" in info and not isinstance(info["has_pixel_masks"], bool):
        raise DatasetError(
            f"{path}: 'has_pixel_masks' must be true or false, got {info['has_pixel_masks']!r}."
        )
    cats = info.get("categories", {})
    if not isinstance(cats, dict):
        raise DatasetError(f"{path}: 'categories' must map category names to {{\"kind\": ...}} objects.")
    for name, spec in cats.items():
        kind = spec.get("kind") if isinstance(spec, dict) else None
        if kind is not None and kind not in _KINDS:
            raise DatasetError(f"{path}: category {name!r} has kind {kind!r}; use 'texture' or 'object'.")
    return info


def _check_root(root: Path, dataset: str | None) -> Path:
    root = Path(root).expanduser()
    if not root.is_dir():
        what = f"{dataset} dataset folder" if dataset not in (None, "folder") else "dataset folder"
        state = "is a file, not a folder" if root.exists() else "does not exist"
        raise DatasetError(f"{what} {root} {state}; {prepare_hint(dataset, root)}.")
    return root


def list_categories(root: Path, *, dataset: str | None = None) -> list[str]:
    """Sorted names of the category folders under ``root`` (folders holding ``train/`` or ``test/``)."""
    root = _check_root(root, dataset)
    cats = [
        p.name
        for p in visible_entries(root)
        if p.is_dir() and ((p / "train").is_dir() or (p / "test").is_dir())
    ]
    if not cats:
        raise DatasetError(
            f"no category folders (<category>/train, <category>/test) found in {root}; "
            f"{prepare_hint(dataset, root)}."
        )
    return cats


def _mask_index(folder: Path) -> dict[str, Path]:
    """Map ``<stem>_mask`` -> mask path for the image files of ``folder`` (``.png`` preferred)."""
    index: dict[str, Path] = {}
    if not folder.is_dir():
        return index
    for p in visible_entries(folder):
        if p.is_dir() or not is_image_file(p):
            continue
        stem = p.stem
        if stem not in index or p.suffix.lower() == ".png":
            index[stem] = p
    return index


def _category_kind(dataset: str, category: str, info: dict[str, Any] | None) -> str:
    """The folder's own ``bgad_dataset.json`` first, then the dataset's spec, else ``object``."""
    spec = (info or {}).get("categories", {}).get(category)
    if isinstance(spec, dict) and spec.get("kind") in _KINDS:
        return spec["kind"]
    if dataset in DATASET_SPECS:
        return DATASET_SPECS.get(dataset).kind(category)
    return "object"


def _check_known_category(root: Path, category: str, dataset: str) -> None:
    known = list_categories(root, dataset=dataset)
    if category not in known:
        raise DatasetError(
            f"unknown {dataset} category {category!r} in {root}; known categories: {', '.join(known)}."
        )


def _train_samples(cat_dir: Path, dataset: str, category: str) -> tuple[Sample, ...]:
    """The normal images of ``train/good``; anything else in ``train/`` is an error."""
    train_dir = cat_dir / "train"
    good_dir = train_dir / NORMAL_TYPE
    if not good_dir.is_dir():
        raise DatasetError(
            f"missing folder {good_dir} (normal training images) for {dataset} category {category!r}; "
            f"the dataset is incomplete - {prepare_hint(dataset, cat_dir.parent)}."
        )
    for p in visible_entries(train_dir):
        if p.name != NORMAL_TYPE:
            raise DatasetError(
                f"unexpected entry {p} in {train_dir}; training data must be normal images in "
                f"{good_dir} only (move it out of the dataset folder)."
            )
    train_imgs = list_image_files(good_dir, _WORDING)
    if not train_imgs:
        raise DatasetError(
            f"folder {good_dir} holds no images; the {dataset} category {category!r} has no normal training data - "
            f"{prepare_hint(dataset, cat_dir.parent)}."
        )
    return tuple(Sample(p, 0, NORMAL_TYPE, None, "train") for p in train_imgs)


def _resolve_pixel_masks(
    gt_dir: Path, has_pixel_masks: bool | None, info: dict[str, Any] | None, dataset: str, category: str
) -> bool:
    """The caller's override, else ``bgad_dataset.json``'s value, else whether ``ground_truth/`` exists."""
    if has_pixel_masks is None:
        has_pixel_masks = (
            bool(info["has_pixel_masks"]) if info and "has_pixel_masks" in info else gt_dir.is_dir()
        )
    if has_pixel_masks and not gt_dir.is_dir():
        raise DatasetError(
            f"{dataset} category {category!r} should have pixel masks but {gt_dir} is missing; re-prepare the "
            'dataset (or set "has_pixel_masks": false in bgad_dataset.json).'
        )
    return bool(has_pixel_masks)


def _defect_samples(
    images: list[Path], defect: str, gt_dir: Path | None, missing_masks: list[tuple[Path, Path]]
) -> list[Sample]:
    """Anomalous samples of one ``test/<defect>`` folder; ``gt_dir=None`` means no pixel masks.

    Images without a mask are appended to ``missing_masks`` (reported together, after the whole listing).
    """
    masks = _mask_index(gt_dir / defect) if gt_dir is not None else {}
    samples = []
    for img in images:
        mask = None
        if gt_dir is not None:
            mask = masks.get(f"{img.stem}_mask")
            if mask is None:
                missing_masks.append((img, gt_dir / defect / f"{img.stem}_mask.png"))
        samples.append(Sample(img, 1, defect, mask, "test"))
    return samples


def _raise_missing_masks(missing_masks: list[tuple[Path, Path]], dataset: str, category: str) -> None:
    shown = "; ".join(f"{img} (expected {mask})" for img, mask in missing_masks[:5])
    more = f"; and {len(missing_masks) - 5} more" if len(missing_masks) > 5 else ""
    raise DatasetError(
        f"{len(missing_masks)} defect image(s) of {dataset} category {category!r} have no mask: {shown}{more}. "
        "Restore the masks (re-extract / re-convert the dataset) or move those images out of the dataset folder."
    )


def _test_samples(test_dir: Path, gt_dir: Path | None, dataset: str, category: str) -> tuple[Sample, ...]:
    """``test/good`` plus one folder per defect type; ``gt_dir=None`` means no pixel masks."""
    test: list[Sample] = []
    missing_masks: list[tuple[Path, Path]] = []
    for p in visible_entries(test_dir):
        if not p.is_dir():
            raise DatasetError(
                f"unexpected file {p} directly in {test_dir}; test images belong in test/good or test/<defect> "
                "(move it out of the dataset folder)."
            )
        images = list_image_files(p, _WORDING)
        if p.name == NORMAL_TYPE:
            test.extend(Sample(img, 0, NORMAL_TYPE, None, "test") for img in images)
        else:
            test.extend(_defect_samples(images, p.name, gt_dir, missing_masks))
    if missing_masks:
        _raise_missing_masks(missing_masks, dataset, category)
    if not test:
        raise DatasetError(
            f"folder {test_dir} holds no test images for {dataset} category {category!r}; "
            f"{prepare_hint(dataset, test_dir.parent.parent)}."
        )
    return tuple(test)


def load_mvtec_category(
    root: Path,
    category: str,
    dataset: str = "mvtec",
    *,
    has_pixel_masks: bool | None = None,
) -> CategoryData:
    """Read one category of an MVTec-layout dataset into a :class:`CategoryData` (sorted samples).

    ``has_pixel_masks`` overrides the detection (``bgad_dataset.json``'s value, else whether
    ``<category>/ground_truth`` exists). With pixel masks, every defect image must have
    ``ground_truth/<defect>/<stem>_mask.png``.
    """
    root = _check_root(root, dataset)
    _check_known_category(root, category, dataset)
    info = read_dataset_info(root)
    cat_dir = root / category
    train = _train_samples(cat_dir, dataset, category)
    test_dir = cat_dir / "test"
    if not test_dir.is_dir():
        raise DatasetError(
            f"missing folder {test_dir} (test images) for {dataset} category {category!r}; the dataset is "
            f"incomplete - {prepare_hint(dataset, root)}."
        )
    gt_dir = cat_dir / "ground_truth"
    has_pixel_masks = _resolve_pixel_masks(gt_dir, has_pixel_masks, info, dataset, category)
    test = _test_samples(test_dir, gt_dir if has_pixel_masks else None, dataset, category)
    return CategoryData(
        dataset=dataset,
        category=category,
        root=root,
        train=train,
        test=test,
        kind=_category_kind(dataset, category, info),  # type: ignore[arg-type]
        has_pixel_masks=has_pixel_masks,
        extra={"layout": "mvtec"},
    )
