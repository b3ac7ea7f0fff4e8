"""What a cell's data really is: a digest of its file list AND the bytes of every image and mask.

A cell id built from file names alone takes a grey copy of a folder, or a re-converted dataset,
for the one it ran on. ``content_sha256`` hashes every image and mask; the hashes are cached by
(path, size, modification time), so only new or changed files are read again (hashing AITEX's 2,500
files once takes about a second; training takes minutes). A prepared dataset's ``manifest.csv``
records the sha256 of every image: a file whose bytes differ (edited by hand, damaged) is refused,
naming the file. ``undecodable_files`` decodes every image and mask once, before any cell runs, and
remembers the content digests that decoded, so a rerun decodes nothing.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

from bgad.data.images import DatasetError, read_image, read_mask, unreadable_file_error
from bgad.data.manifest import MANIFEST_FILE, read_manifest
from bgad.data.samples import CategoryData
from bgad.fileio import atomic_write_text, file_sha256
from bgad.paths import cache_dir

log = logging.getLogger(__name__)
CACHE_FILE = "file-hashes-v1.json"
DECODED_FILE = "decoded-v1.json"


class _JsonCache:
    """A dict kept as one JSON file; an unreadable file starts empty, an unwritable one is skipped."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self.entries: dict = json.loads(self.path.read_text())
        except (OSError, json.JSONDecodeError):
            self.entries = {}
        self.changed = False

    def save(self) -> None:
        if not self.changed:
            return
        try:
            atomic_write_text(self.path, json.dumps(self.entries))
        except OSError as exc:  # a read-only or full cache: recomputed next time
            log.warning("cache %s not written (%s); its entries will be recomputed", self.path, exc)
        self.changed = False


class HashCache(_JsonCache):
    """sha256 of files keyed by absolute path, size and mtime; a cache that cannot be written is skipped."""

    def __init__(self, path: Path | None = None) -> None:
        super().__init__(path or cache_dir() / CACHE_FILE)

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


class DecodedCache(_JsonCache):
    """Content digests of images (and mask/image pairs) that decoded as a cell reads them."""

    def __init__(self, path: Path | None = None) -> None:
        super().__init__(path or cache_dir() / DECODED_FILE)

    def add(self, key: str) -> None:
        self.entries[key] = True
        self.changed = True


def _file_digest(cache: HashCache, path: Path) -> str:
    """The file's sha256; a file that cannot be read is a DatasetError naming it (not an OSError)."""
    try:
        return cache.digest(path)
    except OSError as exc:
        raise unreadable_file_error(path, exc) from exc


def content_sha256(data: CategoryData, cache: HashCache | None = None) -> str:
    """Digest of the category's file list with the sha256 of every image and mask.

    Raises ``DatasetError`` naming the first file whose bytes differ from the dataset's
    ``manifest.csv`` (a prepared dataset edited by hand or damaged).
    """
    cache = cache or HashCache()
    rows = []
    for sample, row in zip((*data.train, *data.test), data.manifest_rows(), strict=True):
        image = _file_digest(cache, sample.image_path)
        mask = _file_digest(cache, sample.mask_path) if sample.mask_path else ""
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


def undecodable_files(
    data: CategoryData, cache: HashCache | None = None, decoded: DecodedCache | None = None
) -> list[str]:
    """Decode every image and mask of the category as a cell reads them; one problem per bad file.

    Why before any cell: a corrupt file found by the cell that reads it fails that cell only after
    others ran; found here, the grid stops with every bad file named. Content digests that decoded
    are remembered (a mask with its image's digest, as its size must match), so a rerun decodes nothing.
    """
    cache, decoded = cache or HashCache(), decoded or DecodedCache()
    problems = []
    for sample in (*data.train, *data.test):
        try:
            _decode_once(sample.image_path, sample.mask_path, cache, decoded)
        except DatasetError as exc:
            problems.append(str(exc))
    cache.save()
    decoded.save()
    return problems


def _decode_once(image: Path, mask: Path | None, cache: HashCache, decoded: DecodedCache) -> None:
    image_key = f"image:{_file_digest(cache, image)}"
    mask_key = f"mask:{_file_digest(cache, mask)}:{image_key}" if mask else None
    if image_key in decoded.entries and (mask_key is None or mask_key in decoded.entries):
        return
    height, width = read_image(image).shape[:2]
    decoded.add(image_key)
    if mask_key is not None:
        read_mask(mask, expected_size=(width, height))
        decoded.add(mask_key)
