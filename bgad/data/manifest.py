"""The manifest of a prepared dataset and the atomic, idempotent way a dataset folder is written.

Every prepared dataset root (``data_dir()/NAME``) holds, next to its category folders:

* ``manifest.csv`` - one row per image: ``path`` (relative to the root, POSIX), ``split``
  (``train``/``test``), ``label`` (0/1), ``defect_type`` (``good`` for normal images), ``mask``
  (relative path of the mask, empty when there is none) and ``sha256`` (of the image file).
  Rows are sorted by (split, path). This is the written-out split of docs/datasets.md (Conversion rules).
* ``bgad_dataset.json`` - ``{"name", "has_pixel_masks", "categories": {cat: {"kind": ...}},
  "conversion": {...}}``; ``conversion`` records the converter, its version, the seed, a fingerprint
  of the raw input, the counts and every input file that was deliberately left out (with the reason).

A dataset is built in a hidden temporary sibling folder, checked, and renamed into place
(:func:`atomic_dataset_dir`), so a failed conversion never leaves a half-written dataset.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bgad.data.images import DatasetError
from bgad.fileio import atomic_directory, file_sha256

__all__ = [
    "DATASET_INFO_FILE",
    "MANIFEST_COLUMNS",
    "MANIFEST_FILE",
    "ManifestRow",
    "atomic_dataset_dir",
    "count_rows",
    "existing_dataset",
    "raw_fingerprint",
    "read_manifest",
    "rows_from_category",
    "sha256_file",
    "write_dataset_info",
    "write_manifest",
]

MANIFEST_FILE = "manifest.csv"
DATASET_INFO_FILE = "bgad_dataset.json"  # same name as bgad.data.mvtec.DATASET_INFO_FILE
MANIFEST_COLUMNS = ("path", "split", "label", "defect_type", "mask", "sha256")


@dataclass(frozen=True)
class ManifestRow:
    path: str
    split: str
    label: int
    defect_type: str
    mask: str
    sha256: str


sha256_file = file_sha256  # the one hashing helper (bgad.fileio), under its historic name here


def write_manifest(root: Path, rows: Iterable[ManifestRow]) -> Path:
    path = Path(root) / MANIFEST_FILE
    ordered = sorted(rows, key=lambda r: (r.split, r.path))
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=MANIFEST_COLUMNS, lineterminator="\n")
        w.writeheader()
        for r in ordered:
            w.writerow(asdict(r))
    return path


def read_manifest(root: Path) -> list[ManifestRow]:
    path = Path(root) / MANIFEST_FILE
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            if tuple(reader.fieldnames or ()) != MANIFEST_COLUMNS:
                raise DatasetError(
                    f"{path} has columns {reader.fieldnames}, expected {list(MANIFEST_COLUMNS)}; "
                    "delete the dataset folder and prepare it again."
                )
            return [
                ManifestRow(
                    r["path"], r["split"], int(r["label"]), r["defect_type"], r["mask"] or "", r["sha256"]
                )
                for r in reader
            ]
    except (OSError, ValueError, KeyError, csv.Error) as exc:
        raise DatasetError(
            f"cannot read manifest {path}: {exc}; delete the dataset folder and prepare it again."
        ) from exc


def count_rows(rows: Iterable[ManifestRow]) -> dict[str, int]:
    """``{"train/good": n, "test/good": n, "test/<defect>": n, ...}`` (sorted keys)."""
    c = Counter(f"{r.split}/{r.defect_type}" for r in rows)
    return dict(sorted(c.items()))


def rows_from_category(data: Any, root: Path) -> list[ManifestRow]:
    """Manifest rows (with sha256) for a loaded :class:`~bgad.data.samples.CategoryData`."""
    rows = []
    for s in (*data.train, *data.test):
        rows.append(
            ManifestRow(
                path=Path(s.image_path).relative_to(root).as_posix(),
                split=s.split,
                label=int(s.label),
                defect_type=s.defect_type,
                mask=Path(s.mask_path).relative_to(root).as_posix() if s.mask_path else "",
                sha256=sha256_file(Path(s.image_path)),
            )
        )
    return rows


def write_dataset_info(
    root: Path,
    name: str,
    has_pixel_masks: bool,
    categories: dict[str, str],
    conversion: dict[str, Any] | None = None,
) -> Path:
    info: dict[str, Any] = {
        "name": name,
        "has_pixel_masks": bool(has_pixel_masks),
        "categories": {c: {"kind": k} for c, k in sorted(categories.items())},
    }
    if conversion is not None:
        info["conversion"] = conversion
    path = Path(root) / DATASET_INFO_FILE
    path.write_text(json.dumps(info, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    return path


def raw_fingerprint(raw: Path) -> str:
    """Cheap identity of a raw input tree: sha256 over the sorted (relative path, size) of its visible files."""
    raw = Path(raw)
    h = hashlib.sha256()
    if raw.is_file():
        h.update(f"{raw.name}\t{raw.stat().st_size}\n".encode())
        return h.hexdigest()
    entries = []
    for dirpath, dirnames, filenames in os.walk(raw):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for fn in filenames:
            if fn.startswith("."):
                continue
            p = Path(dirpath) / fn
            entries.append((p.relative_to(raw).as_posix(), p.stat().st_size))
    for rel, size in sorted(entries):
        h.update(f"{rel}\t{size}\n".encode())
    return h.hexdigest()


def existing_dataset(root: Path, name: str, identity: dict[str, Any]) -> bool:
    """Whether ``root`` already holds the finished dataset ``name`` made from the same input.

    ``identity`` holds the keys of ``bgad_dataset.json``'s ``conversion`` section that must match
    (converter, version, seed, source fingerprint...). Returns False when ``root`` does not exist or is an
    empty folder. Raises :class:`DatasetError` when ``root`` holds something else - a dataset prepared with
    another seed or from other input, or a folder without our manifest - since it is never overwritten.
    """
    root = Path(root)
    if not root.exists():
        return False
    if not root.is_dir():
        raise DatasetError(f"{root} exists and is not a folder; pass another --root or remove it.")
    if not any(root.iterdir()):
        return False
    info_path = root / DATASET_INFO_FILE
    if not (root / MANIFEST_FILE).is_file() or not info_path.is_file():
        raise DatasetError(
            f"{root} already exists but holds no {MANIFEST_FILE}/{DATASET_INFO_FILE} (not a dataset prepared by "
            f"bgad-bench, or a copy made by hand). It is never overwritten: pass another --data-root or delete {root}; "
            f"to check a hand-made copy run `bgad-bench data verify {name} --data-root {root}`."
        )
    try:
        info = json.loads(info_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise DatasetError(f"cannot parse {info_path}: {exc}; delete {root} and prepare it again.") from exc
    conv = info.get("conversion") or {}
    diffs = [
        f"{k}: existing {conv.get(k)!r}, requested {v!r}" for k, v in identity.items() if conv.get(k) != v
    ]
    if info.get("name") != name:
        diffs.insert(0, f"name: existing {info.get('name')!r}, requested {name!r}")
    if diffs:
        raise DatasetError(
            f"{root} already holds a prepared dataset that differs from this request ({'; '.join(diffs)}). "
            "Prepared datasets are never overwritten: pass a separate --root (e.g. "
            f"{root.parent / (root.name + '_seed<N>')}) or delete {root} first."
        )
    missing = [r.path for r in read_manifest(root) if not (root / r.path).is_file()]
    if missing:
        raise DatasetError(
            f"{root} is a prepared {name} dataset but {len(missing)} file(s) of its manifest are missing "
            f"(first: {missing[0]}); delete {root} and prepare it again."
        )
    return True


@contextmanager
def atomic_dataset_dir(root: Path) -> Iterator[Path]:
    """Yield a fresh temporary sibling of ``root``; on success rename it to ``root``, on failure delete it.

    ``root`` must not exist, or be an empty folder (removed just before the rename).
    """
    root = Path(root).expanduser().resolve()
    with atomic_directory(root) as tmp:
        yield tmp
        if root.exists():
            root.rmdir()  # only an empty folder; anything else was refused by existing_dataset()
