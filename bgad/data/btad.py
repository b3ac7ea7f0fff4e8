"""BTAD (beanTech Anomaly Detection): reader for its native layout.

Native layout (as distributed; docs/datasets.md)::

    <root>/{01,02,03}/train/ok/*            normal training images
    <root>/{01,02,03}/test/ok/*, test/ko/*  normal / anomalous test images
    <root>/{01,02,03}/ground_truth/ko/*     one mask per ``test/ko`` image, same stem

Images are ``.bmp`` (01, 03) or ``.png`` (02); masks ``.png`` (01, 02) or ``.bmp`` (03). A mask is
matched to ``test/ko/<stem>.*`` by ``ground_truth/ko/<stem>.<ext>`` (or ``<stem>_mask.<ext>``), any
image extension. ``ok`` becomes the defect type ``good`` and ``ko`` stays ``ko``.
A category folder already in the MVTec layout (``train/good``) is read with
:func:`bgad.data.mvtec.load_mvtec_category`.
Preparation from ``btad.zip`` lives in :mod:`bgad.data.archives`.
"""

from __future__ import annotations

from pathlib import Path

from bgad.data.images import DatasetError, StrayEntryWording, list_image_files, visible_entries
from bgad.data.mvtec import load_mvtec_category
from bgad.data.samples import NORMAL_TYPE, CategoryData, Sample
from bgad.data.specs import DATASET_SPECS

__all__ = [
    "BTAD_CATEGORIES",
    "BTAD_TRAIN_COUNTS",
    "MVTEC_COUNTS",
    "list_btad_categories",
    "load_btad_category",
]

_BTAD = DATASET_SPECS.get("btad")
_MVTEC = DATASET_SPECS.get("mvtec")
BTAD_CATEGORIES = _BTAD.categories
BTAD_TRAIN_COUNTS = {c: n.train for c, n in _BTAD.counts.items()}
BTAD_DEFECT = "ko"
#: MVTec AD per category: (train, test, test good), from protocols/datasets.toml.
MVTEC_COUNTS: dict[str, tuple[int, int, int]] = {
    c: (n.train, n.test_normal + n.test_anomalous, n.test_normal) for c, n in _MVTEC.counts.items()
}


def _hint() -> str:
    return "download it with `bgad-bench data download btad` or run `bgad-bench data prepare btad --archive FILE`"


_WORDING = StrayEntryWording(
    folder="unexpected folder {path} in BTAD image folder {folder}; move or delete it.",
    file=(
        "unexpected file {path} in BTAD folder {folder}: extension {suffix} is not one of "
        "{extensions}; convert or delete it (nothing is skipped silently)."
    ),
)


def _images(folder: Path, what: str) -> list[Path]:
    """The image files of a BTAD folder that must exist and hold at least one image."""
    if not folder.is_dir():
        raise DatasetError(f"missing BTAD folder {folder} ({what}); the dataset is incomplete - {_hint()}.")
    out = list_image_files(folder, _WORDING)
    if not out:
        raise DatasetError(f"BTAD folder {folder} ({what}) holds no images; {_hint()}.")
    return out


def list_btad_categories(root: Path) -> list[str]:
    """Category folders of a BTAD root (native ``train/ok`` or MVTec ``train/good`` layout)."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"BTAD folder {root} does not exist; {_hint()}.")
    cats = [p.name for p in visible_entries(root) if p.is_dir() and (p / "train").is_dir()]
    if not cats:
        nested = [p for p in visible_entries(root) if p.is_dir() and (p / "01" / "train").is_dir()]
        extra = f" (the categories are one level down, in {nested[0]}: pass that folder)" if nested else ""
        raise DatasetError(f"no BTAD categories (01/train, 02/train, 03/train) in {root}{extra}; {_hint()}.")
    return cats


def _btad_train(cat: Path) -> tuple[Sample, ...]:
    """The normal training images of ``train/ok``; anything else in ``train/`` is an error."""
    train = tuple(
        Sample(p, 0, NORMAL_TYPE, None, "train") for p in _images(cat / "train" / "ok", "normal training")
    )
    for p in visible_entries(cat / "train"):
        if p.name != "ok":
            raise DatasetError(
                f"unexpected entry {p} in {cat / 'train'}; BTAD training data lives in train/ok only."
            )
    return train


def _btad_test_dir(cat: Path) -> Path:
    """``<cat>/test``, which must exist and hold nothing but ``ok/`` and ``ko/``."""
    test_dir = cat / "test"
    if not test_dir.is_dir():
        raise DatasetError(f"missing BTAD folder {test_dir}; the dataset is incomplete - {_hint()}.")
    for p in visible_entries(test_dir):
        if p.name not in ("ok", BTAD_DEFECT):
            raise DatasetError(
                f"unexpected entry {p} in {test_dir}; BTAD test data lives in test/ok and test/ko."
            )
    return test_dir


def _btad_masks(gt: Path) -> dict[str, Path]:
    """Image stem -> mask, for masks named ``<stem>.<ext>`` or ``<stem>_mask.<ext>``."""
    masks: dict[str, Path] = {}
    for m in _images(gt, "masks"):
        key = m.stem[: -len("_mask")] if m.stem.endswith("_mask") else m.stem
        if key in masks:
            raise DatasetError(f"two masks for BTAD image stem {key!r}: {masks[key]} and {m}; remove one.")
        masks[key] = m
    return masks


def _btad_defect_samples(cat: Path, test_dir: Path) -> list[Sample]:
    """The ``test/ko`` images, each with its mask from ``ground_truth/ko`` (a missing mask is an error)."""
    gt = cat / "ground_truth" / BTAD_DEFECT
    if not gt.is_dir():
        raise DatasetError(
            f"missing BTAD mask folder {gt} for the images in {test_dir / BTAD_DEFECT}; {_hint()}."
        )
    masks = _btad_masks(gt)
    samples, missing = [], []
    for p in _images(test_dir / BTAD_DEFECT, "anomalous test"):
        m = masks.get(p.stem)
        if m is None:
            missing.append(p)
        samples.append(Sample(p, 1, BTAD_DEFECT, m, "test"))
    if missing:
        shown = ", ".join(str(p) for p in missing[:5])
        raise DatasetError(
            f"{len(missing)} BTAD defect image(s) have no mask in {gt} (same stem, any image extension): {shown}"
            f"{' ...' if len(missing) > 5 else ''}. Restore the masks (re-extract btad.zip)."
        )
    return samples


def load_btad_category(root: Path, category: str) -> CategoryData:
    """Read BTAD category ``01``/``02``/``03`` from ``root`` (native layout or an MVTec-layout copy)."""
    root = Path(root).expanduser()
    cats = list_btad_categories(root)
    if category not in cats:
        raise DatasetError(f"unknown BTAD category {category!r} in {root}; found: {', '.join(cats)}.")
    cat = root / category
    if (cat / "train" / NORMAL_TYPE).is_dir():
        return load_mvtec_category(root, category, "btad")
    train = _btad_train(cat)
    test_dir = _btad_test_dir(cat)
    test: list[Sample] = []
    if (test_dir / "ok").exists():
        test.extend(Sample(p, 0, NORMAL_TYPE, None, "test") for p in _images(test_dir / "ok", "normal test"))
    if (test_dir / BTAD_DEFECT).exists():
        test.extend(_btad_defect_samples(cat, test_dir))
    if not test:
        raise DatasetError(f"BTAD folder {test_dir} holds no test images; {_hint()}.")
    return CategoryData(
        dataset="btad",
        category=category,
        root=root,
        train=train,
        test=tuple(test),
        kind="object",
        has_pixel_masks=True,
        extra={"layout": "btad"},
    )
