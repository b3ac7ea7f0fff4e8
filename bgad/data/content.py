"""What a cell's data really is: a digest of its file list AND the bytes of every image and mask.

A cell id built from file names alone takes a grey copy of a folder, or a re-converted dataset,
for the one it ran on. ``content_sha256`` hashes every image and mask; the hashes are cached by
(path, size, modification time), so only new or changed files are read again (hashing AITEX's 2,500
files once takes about a second; training takes minutes). A prepared dataset's ``manifest.csv``
records the sha256 of every image: a file whose bytes differ (edited by hand, damaged) is refused,
naming the file.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

from bgad.data.images import DatasetError
from bgad.data.manifest import MANIFEST_FILE, read_manifest
from bgad.data.samples import CategoryData
from bgad.fileio import atomic_write_text, file_sha256
from bgad.paths import cache_dir

log = logging.getLogger(__name__)
CACHE_FILE = "file-hashes-v1.json"


class HashCache:
    """sha256 of files keyed by absolute path, size and mtime; a cache that cannot be written is skipped."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or cache_dir() / CACHE_FILE
        try:
            self.entries: dict[str, list] = json.loads(self.path.read_text())
        except (OSError, json.JSONDecodeError):
            self.entries = {}
        self.changed = False

    def digest(self, path: Path) -> str:
        path = Path(path).resolve()
        stat = path.stat()
        key = str(path)
        known = self.entries.get(key)
        if known and known[0] == stat.st_size and known[1] == stat.st_mtime_ns:
            return known[2]
        value = file_sha256(path)
        self.entries[key] = [stat.st_size, stat.st_mtime_ns, value]
        self.changed = True
        return value

    def save(self) -> None:
        if not self.changed:
            return
        try:
            atomic_write_text(self.path, json.dumps(self.entries))
        except OSError as exc:  # a read-only or full cache: hashes are recomputed next time
            log.warning("file-hash cache %s not written (%s); hashes will be recomputed", self.path, exc)
        self.changed = False


def content_sha256(data: CategoryData, cache: HashCache | None = None) -> str:
    """Digest of the category's file list with the sha256 of every image and mask.

    Raises ``DatasetError`` naming the first file whose bytes differ from the dataset's
    ``manifest.csv`` (a prepared dataset edited by hand or damaged).
    """
    cache = cache or HashCache()
    rows = []
    for sample, row in zip((*data.train, *data.test), data.manifest_rows(), strict=True):
        image = cache.digest(sample.image_path)
        mask = cache.digest(sample.mask_path) if sample.mask_path else ""
        rows.append({**row, "image_sha256": image, "mask_sha256": mask})
    cache.save()
    _check_manifest(data, {r["path"]: r["image_sha256"] for r in rows})
    return hashlib.sha256(json.dumps(rows, sort_keys=True).encode()).hexdigest()


def _check_manifest(data: CategoryData, digests: dict[str, str]) -> None:
    manifest = Path(data.root) / MANIFEST_FILE
    if not manifest.is_file():
        return
    for row in read_manifest(data.root):
        got = digests.get(row.path)
        if got is not None and got != row.sha256:
            raise DatasetError(
                f"{Path(data.root) / row.path} differs from the file {MANIFEST_FILE} recorded when the dataset "
                f"was prepared (sha256 {got[:12]}…, expected {row.sha256[:12]}…): it was edited or damaged. "
                f"Prepare the dataset again (`bgad-bench data prepare {data.dataset} ...`); to use changed data "
                f"on purpose, run it as your own folder (--dataset folder --data-root {data.root})."
            )
