"""MVTec AD and BTAD from their archives: a (downloaded or hand-placed) archive becomes a prepared folder.

sha256 check, safe extraction into a temporary sibling, check against the official counts
(protocols/datasets.toml), ``manifest.csv`` + ``bgad_dataset.json``, rename into place (idempotent like the
converters of :mod:`bgad.data.convert`).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from bgad.data.btad import BTAD_CATEGORIES, BTAD_TRAIN_COUNTS, MVTEC_COUNTS, load_btad_category
from bgad.data.download import ARCHIVES, check_archive, safe_extract
from bgad.data.images import DatasetError, visible_entries
from bgad.data.manifest import (
    atomic_dataset_dir,
    existing_dataset,
    rows_from_category,
    write_dataset_info,
    write_manifest,
)
from bgad.data.mvtec import MVTEC_CATEGORIES, load_mvtec_category
from bgad.data.samples import CategoryData
from bgad.data.specs import DATASET_SPECS


def _find_root(extracted: Path, marker: str, what: str) -> Path:
    """The folder (at depth <= 3) of ``extracted`` that holds ``marker`` (a relative path)."""
    queue = [(extracted, 0)]
    while queue:
        folder, depth = queue.pop(0)
        if (folder / marker).is_dir():
            return folder
        if depth < 3:
            queue.extend((p, depth + 1) for p in visible_entries(folder) if p.is_dir())
    raise DatasetError(
        f"the archive does not contain the {what} layout (no {marker} found); is it the right file?"
    )


def _prepare_archive(name: str, archive: Path, root: Path, check_sha256: bool) -> Path:
    archive = Path(archive).expanduser().resolve()
    root = Path(root).expanduser().resolve()
    if not archive.is_file():
        raise DatasetError(f"archive {archive} does not exist; check --archive.")
    if check_sha256:
        check_archive(name, archive)
    identity = {"converter": name, "archive": ARCHIVES[name].filename, "archive_size": archive.stat().st_size}
    if existing_dataset(root, name, identity):
        return root
    marker = DATASET_SPECS.get(name).archive.marker
    with atomic_dataset_dir(root) as tmp:
        try:
            staging = tmp / ".extract"
            safe_extract(archive, staging)
            src = _find_root(staging, marker, name)
            for p in visible_entries(src):
                os.replace(p, tmp / p.name)
            shutil.rmtree(staging)
            _finish_archive(name, tmp, {**identity, "source": str(archive), "sha256_checked": check_sha256})
        except DatasetError as exc:  # name the archive's members, not a temporary folder about to vanish
            message = (
                str(exc)
                .replace(str(tmp / ".extract"), f"{archive.name}:")
                .replace(str(tmp), f"{archive.name}:")
            )
            raise DatasetError(message) from None
    return root


def _finish_archive(name: str, tmp: Path, conversion: dict) -> None:
    """Check an extracted MVTec AD or BTAD copy against its official categories and counts; write the
    manifest and the dataset info. The counts come from the dataset facts (``MVTEC_COUNTS``,
    ``BTAD_TRAIN_COUNTS``)."""
    if name == "btad":
        expected = {c: (n, None, None) for c, n in BTAD_TRAIN_COUNTS.items()}
        cats = [c for c in BTAD_CATEGORIES if (tmp / c).is_dir()]
        wanted = list(BTAD_CATEGORIES)
        load = load_btad_category
    else:
        expected = dict(MVTEC_COUNTS)
        cats = sorted(p.name for p in visible_entries(tmp) if p.is_dir() and (p / "train").is_dir())
        wanted = sorted(MVTEC_CATEGORIES)

        def load(root: Path, category: str) -> CategoryData:
            return load_mvtec_category(root, category, "mvtec")

    problems = [] if cats == wanted else [f"categories found {cats}, expected {wanted}"]
    rows, counts = [], {}
    for c in cats:
        data = load(tmp, c)
        got = (len(data.train), len(data.test), sum(1 for s in data.test if not s.is_anomalous))
        exp = expected.get(c)
        if exp is not None and any(e is not None and g != e for g, e in zip(got, exp, strict=True)):
            problems.append(f"{c}: train/test/test-good {got}, expected {tuple(exp)}")
        counts[c] = {"train": got[0], "test": got[1], "test_good": got[2]}
        rows.extend(rows_from_category(data, tmp))
    spec = DATASET_SPECS.get(name)
    if problems:
        raise DatasetError(
            f"the {spec.title} archive does not match the official counts: {'; '.join(problems)}. "
            f"Re-download {spec.archive.filename}."
        )
    write_manifest(tmp, rows)
    kinds = {c: spec.kind(c) for c in cats}
    write_dataset_info(tmp, name, True, kinds, {**conversion, "counts": counts, "excluded": []})


def prepare_btad(archive: Path, root: Path, *, check_sha256: bool = True) -> Path:
    """Extract ``btad.zip`` into ``root`` (native layout ``root/{01,02,03}``), check counts, write the manifest."""
    return _prepare_archive("btad", archive, root, check_sha256)


def prepare_mvtec(archive: Path, root: Path, *, check_sha256: bool = True) -> Path:
    """Extract ``mvtec_anomaly_detection.tar.xz`` into ``root`` (``root/<category>/...``), check counts, manifest."""
    return _prepare_archive("mvtec", archive, root, check_sha256)
