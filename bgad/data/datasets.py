"""Named dataset loaders: ``DATASETS.get(name)(root, category) -> CategoryData``.

``root`` is the folder that holds the dataset's categories; ``None`` means the default location
(``data_dir()/<name>``; for ``synthetic`` the generated cache folder).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from bgad.data.btad import list_btad_categories, load_btad_category
from bgad.data.images import DatasetError
from bgad.data.mvtec import list_categories, load_mvtec_category
from bgad.data.samples import CategoryData
from bgad.data.specs import DATASET_SPECS
from bgad.data.synthetic import ensure_synthetic_dataset
from bgad.paths import data_dir
from bgad.registry import Registry

__all__ = [
    "DATASETS",
    "IMAGE_LEVEL_ONLY",
    "default_root",
    "list_dataset_categories",
    "load_category",
]

Loader = Callable[[Path | None, str], CategoryData]

#: dataset name -> loader; the names and facts are those of ``DATASET_SPECS`` (a test keeps them equal).
DATASETS: Registry[Loader] = Registry("dataset")
_LISTERS: dict[str, Callable[[Path | None], list[str]]] = {}

#: Datasets with image-level labels only (no pixel masks, so no pixel metrics).
IMAGE_LEVEL_ONLY: frozenset[str] = frozenset(
    n for n in DATASET_SPECS.names() if not DATASET_SPECS.get(n).pixel_masks
)
_MVTEC_LAYOUT = tuple(n for n in DATASET_SPECS.names() if DATASET_SPECS.get(n).layout == "mvtec")


def default_root(dataset: str) -> Path:
    """Where a prepared dataset lives by default: ``data_dir()/<dataset>``."""
    return data_dir() / dataset


def _mvtec_layout_loader(name: str) -> tuple[Loader, Callable[[Path | None], list[str]]]:
    masks = False if name in IMAGE_LEVEL_ONLY else None

    def load(root: Path | None, category: str) -> CategoryData:
        return load_mvtec_category(
            root if root is not None else default_root(name), category, name, has_pixel_masks=masks
        )

    def lister(root: Path | None) -> list[str]:
        return list_categories(root if root is not None else default_root(name), dataset=name)

    load.__name__ = f"load_{name}"
    load.__doc__ = f"Load a category of the {name} dataset (MVTec layout) from ``root`` or data_dir()/{name}."
    return load, lister


for _name in _MVTEC_LAYOUT:
    _load, _list = _mvtec_layout_loader(_name)
    DATASETS.register(_name, _load)
    _LISTERS[_name] = _list


def _load_synthetic(root: Path | None, category: str) -> CategoryData:
    """The built-in synthetic dataset (seed 0), generated on first use."""
    return load_mvtec_category(ensure_synthetic_dataset(root), category, "synthetic")


DATASETS.register("synthetic", _load_synthetic)
_LISTERS["synthetic"] = lambda root: list_categories(ensure_synthetic_dataset(root), dataset="synthetic")


def _load_btad(root: Path | None, category: str) -> CategoryData:
    """BTAD in its native layout (``{01,02,03}/train/ok``, ``test/{ok,ko}``, ``ground_truth/ko``)."""
    return load_btad_category(root if root is not None else default_root("btad"), category)


def _list_btad(root: Path | None) -> list[str]:
    return list_btad_categories(root if root is not None else default_root("btad"))


DATASETS.register("btad", _load_btad)
_LISTERS["btad"] = _list_btad


def _user_root(root: Path | None) -> Path:
    if root is None:
        raise DatasetError(
            "the folder dataset is your own MVTec-layout folder: give it with --data-root DIR "
            "(DIR/<category>/train/good, DIR/<category>/test/<type>, optional DIR/<category>/ground_truth/<type>)"
        )
    return root


def _load_folder(root: Path | None, category: str) -> CategoryData:
    """Your own folder in the MVTec layout: any category names, pixel masks optional."""
    return load_mvtec_category(_user_root(root), category, "folder")


DATASETS.register("folder", _load_folder)
_LISTERS["folder"] = lambda root: list_categories(_user_root(root), dataset="folder")


def load_category(dataset: str, category: str, root: Path | None = None) -> CategoryData:
    """Load ``category`` of the registered ``dataset`` (``root``: the folder holding its categories)."""
    return DATASETS.get(dataset)(Path(root) if root is not None else None, category)


def list_dataset_categories(dataset: str, root: Path | None = None) -> list[str]:
    """Sorted category names of the registered ``dataset`` found on disk."""
    DATASETS.get(dataset)  # unknown names: the registry's "did you mean" error
    lister = _LISTERS.get(dataset)
    if lister is None:
        raise DatasetError(f"dataset {dataset!r} cannot list its categories; pass the category explicitly.")
    return sorted(lister(Path(root) if root is not None else None))
