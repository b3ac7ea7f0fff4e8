"""Downloading (with resume and a checksum) and safe extraction of the MVTec AD and BTAD archives.

Only :mod:`urllib` is used. :func:`download` writes to ``<dest>.part``, resumes it with an HTTP
``Range`` request when it exists, checks the sha256 and only then renames it to ``dest``.
:func:`download_archive` tries every mirror of a dataset in turn; when all fail (offline, broken link,
checksum mismatch) it raises :class:`DownloadError` saying where to put a hand-downloaded archive and
which ``bgad-bench data prepare NAME --archive FILE`` command to run.
:func:`safe_extract` unpacks ``.tar.xz``/``.tar.gz``/``.tar``/``.zip`` and refuses any member that would
land outside the target (absolute paths, ``..``, links pointing outside, device files).
"""

from __future__ import annotations

import http.client
import os
import posixpath
import stat
import tarfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from bgad.data.images import DatasetError
from bgad.data.specs import DATASET_SPECS, ArchiveSpec, dataset_names
from bgad.fileio import file_sha256
from bgad.paths import cache_dir

__all__ = [
    "ARCHIVES",
    "ArchiveSpec",
    "ChecksumError",
    "DownloadError",
    "UnsafeArchiveError",
    "check_archive",
    "default_archive_path",
    "download",
    "download_archive",
    "manual_download_hint",
    "safe_extract",
]

CHUNK = 1 << 20


class DownloadError(DatasetError):
    """A download failed (network, HTTP error, incomplete transfer); the message says what to do."""


class ChecksumError(DownloadError):
    """The downloaded (or given) file does not have the expected sha256."""


class UnsafeArchiveError(DatasetError):
    """An archive member would be written outside the extraction folder (or is a device/odd file)."""


#: The downloadable datasets' archives (facts in protocols/datasets.toml).
ARCHIVES: dict[str, ArchiveSpec] = {n: DATASET_SPECS.get(n).archive for n in dataset_names("archive")}


def default_archive_path(name: str) -> Path:
    """Where downloaded (or hand-placed) archives live: ``cache_dir()/downloads/<filename>``."""
    return cache_dir() / "downloads" / ARCHIVES[name].filename


def manual_download_hint(name: str) -> str:
    spec = ARCHIVES[name]
    return (
        f"Download {spec.filename} by hand (from {spec.homepage} or a mirror: {', '.join(spec.mirrors)}), "
        f"then either place it at {default_archive_path(name)} and run `bgad-bench data download {name}` again, or run "
        f"`bgad-bench data prepare {name} --archive FILE` with FILE the path of the archive "
        f"(expected sha256 {spec.sha256})."
    )


def _progress(total: int | None, done: int, desc: str) -> tuple[Progress, TaskID]:
    prog = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        transient=False,
    )
    task = prog.add_task(desc, total=total, completed=done)
    return prog, task


def _request(url: str, done: int, timeout: float) -> Any:
    """The response for ``url`` from byte ``done`` on; ``None`` when the ``.part`` file is already complete."""
    headers = {"User-Agent": "bgad-bench"}
    if done:
        headers["Range"] = f"bytes={done}-"
    req = urllib.request.Request(url, headers=headers)
    try:
        return urllib.request.urlopen(req, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and done:  # requested range not satisfiable: the .part is (at least) complete
            return None
        raise DownloadError(f"download of {url} failed: HTTP {exc.code} {exc.reason}.") from exc
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DownloadError(f"cannot reach {url}: {reason} (offline, or the link is broken).") from exc


def _copy_blocks(
    resp: Any, f: IO[bytes], url: str, part: Path, received: int, on_block: Callable[[int], None]
) -> int:
    """Append ``resp``'s body to ``f`` block by block; the total bytes in ``part`` afterwards."""
    while True:
        try:
            block = resp.read(CHUNK)
        except (OSError, ValueError, http.client.HTTPException) as exc:
            raise DownloadError(
                f"download of {url} was interrupted after {received} bytes "
                f"({exc.__class__.__name__}: {exc}); run the same command again to resume from {part}."
            ) from exc
        if not block:
            return received
        f.write(block)
        received += len(block)
        on_block(received)


def _receive(resp: Any, url: str, part: Path, done: int, desc: str, progress: bool) -> None:
    """Write ``resp``'s body into ``part`` (appending when the server honoured the ``Range`` request)."""
    status = getattr(resp, "status", 200)
    if done and status != 206:
        done = 0  # the server ignored the Range header: start over
    length = resp.headers.get("Content-Length")
    total = (int(length) + done) if length is not None and length.isdigit() else None
    mode = "ab" if done else "wb"
    prog = task = None
    if progress:
        prog, task = _progress(total, done, desc)
        prog.start()

    def report(received: int) -> None:
        if prog is not None:
            prog.update(task, completed=received)

    try:
        with open(part, mode) as f:
            received = _copy_blocks(resp, f, url, part, done, report)
    finally:
        if prog is not None:
            prog.stop()
    if total is not None and received < total:
        raise DownloadError(
            f"download of {url} stopped after {received} of {total} bytes; run the same command again to "
            f"resume from {part}."
        )


def _check_download(url: str, part: Path, sha256: str) -> None:
    """Delete ``part`` and raise :class:`ChecksumError` unless its sha256 is ``sha256``."""
    got = file_sha256(part)
    if got != sha256:
        part.unlink(missing_ok=True)
        raise ChecksumError(
            f"the file downloaded from {url} has sha256 {got}, expected {sha256} (corrupt download or a "
            "different file behind the link); it was deleted."
        )


def download(
    url: str,
    dest: Path,
    sha256: str | None,
    progress: bool = True,
    *,
    timeout: float = 60.0,
) -> Path:
    """Download ``url`` to ``dest`` (resuming ``dest.part``), check its sha256, return ``dest``.

    An existing ``dest`` with the right checksum is returned at once. A ``.part`` file left by an
    interrupted download is resumed with ``Range: bytes=N-`` (a server that ignores it restarts from 0).
    Raises :class:`DownloadError` (network/HTTP/incomplete; the ``.part`` file is kept for the next try)
    or :class:`ChecksumError` (the ``.part`` file is deleted).
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.is_file() and (sha256 is None or file_sha256(dest) == sha256):
        return dest
    part = dest.with_name(dest.name + ".part")
    done = part.stat().st_size if part.is_file() else 0
    resp = _request(url, done, timeout)
    if resp is not None:
        with resp:
            _receive(resp, url, part, done, dest.name, progress)
    if sha256 is not None:
        _check_download(url, part, sha256)
    os.replace(part, dest)
    return dest


def download_archive(
    name: str, dest_dir: Path | None = None, progress: bool = True, mirrors: tuple[str, ...] | None = None
) -> Path:
    """The archive of dataset ``name`` (``mvtec``/``btad``), downloaded from the first mirror that works.

    A file already at the destination (downloaded earlier or placed by hand) is used when its sha256
    matches. When every mirror fails, :class:`DownloadError` lists each failure and explains the manual route.
    """
    if name not in ARCHIVES:
        raise DatasetError(f"no download for dataset {name!r}; downloadable: {', '.join(sorted(ARCHIVES))}.")
    spec = ARCHIVES[name]
    dest = (Path(dest_dir) / spec.filename) if dest_dir else default_archive_path(name)
    errors = []
    for url in mirrors or spec.mirrors:
        try:
            return download(url, dest, spec.sha256, progress=progress)
        except DownloadError as exc:
            errors.append(f"- {url}: {exc}")
    raise DownloadError(
        f"could not download the {name} archive from any mirror:\n"
        + "\n".join(errors)
        + "\n"
        + manual_download_hint(name)
    )


def check_archive(name: str, archive: Path) -> None:
    """Raise :class:`ChecksumError` when ``archive``'s sha256 is not the known one for dataset ``name``."""
    archive = Path(archive)
    if not archive.is_file():
        raise DatasetError(f"archive {archive} does not exist. {manual_download_hint(name)}")
    got = file_sha256(archive)
    if got != ARCHIVES[name].sha256:
        raise ChecksumError(
            f"archive {archive} has sha256 {got}, expected {ARCHIVES[name].sha256} for {ARCHIVES[name].filename}: it is "
            f"corrupt, incomplete or a different file. {manual_download_hint(name)}"
        )


# --------------------------------------------------------------------------------------------------
# safe extraction


def _safe_member_name(name: str, archive: Path) -> str:
    norm = name.replace("\\", "/")
    if norm.startswith("/") or (len(norm) > 1 and norm[1] == ":"):
        raise UnsafeArchiveError(
            f"archive {archive} has a member with an absolute path {name!r}; refusing to extract it."
        )
    clean = posixpath.normpath(norm)
    if clean == ".." or clean.startswith("../") or "/../" in f"/{norm}/":
        raise UnsafeArchiveError(
            f"archive {archive} has a member {name!r} that points outside the target (..); refusing to extract it."
        )
    return clean


def _check_link(member_name: str, link: str, archive: Path, hard: bool) -> None:
    link = link.replace("\\", "/")
    if link.startswith("/"):
        raise UnsafeArchiveError(
            f"archive {archive}: link {member_name!r} -> {link!r} is absolute; refusing to extract it."
        )
    base = "" if hard else posixpath.dirname(member_name)
    target = posixpath.normpath(posixpath.join(base, link))
    if target == ".." or target.startswith("../"):
        raise UnsafeArchiveError(
            f"archive {archive}: link {member_name!r} -> {link!r} points outside the target; refusing to extract it."
        )


#: Limits against archive bombs: no image of any dataset here comes near them.
MAX_MEMBER_BYTES = 1 << 30  # one member's declared size
MAX_MEMBER_RATIO = 200  # a zip member's declared size / its compressed size (images barely compress)
MAX_TOTAL_RATIO = 100  # all members' declared sizes / the archive's size


def _check_sizes(archive: Path, sizes: list[tuple[str, int, int | None]]) -> None:
    """Refuse absurd declared sizes or compression ratios before anything is written."""
    for name, size, packed in sizes:
        if size > MAX_MEMBER_BYTES:
            raise UnsafeArchiveError(
                f"archive {archive}: member {name!r} declares {size / 2**30:.1f} GiB (limit "
                f"{MAX_MEMBER_BYTES / 2**30:.0f} GiB); refusing to extract it - is it the right file?"
            )
        if packed is not None and size > (1 << 20) and size > MAX_MEMBER_RATIO * max(packed, 1):
            raise UnsafeArchiveError(
                f"archive {archive}: member {name!r} would expand {size / max(packed, 1):.0f}-fold "
                f"(limit {MAX_MEMBER_RATIO}); refusing to extract it (an archive bomb?)."
            )
    total, on_disk = sum(s for _, s, _ in sizes), archive.stat().st_size
    if total > (1 << 20) and total > MAX_TOTAL_RATIO * on_disk:
        raise UnsafeArchiveError(
            f"archive {archive} ({on_disk} bytes) declares {total} bytes of content, more than "
            f"{MAX_TOTAL_RATIO}-fold; refusing to extract it (an archive bomb?)."
        )


def _extract_zip(zf: zipfile.ZipFile, infos: list[zipfile.ZipInfo], target: Path, archive: Path) -> None:
    """Member by member, never writing more bytes than a member declares."""
    for info in infos:
        dest = target / _safe_member_name(info.filename, archive)
        if info.is_dir():
            dest.mkdir(parents=True, exist_ok=True)
            continue
        dest.parent.mkdir(parents=True, exist_ok=True)
        written = 0
        with zf.open(info) as src, open(dest, "wb") as out:
            while block := src.read(1 << 20):
                written += len(block)
                if written > info.file_size:
                    raise UnsafeArchiveError(
                        f"archive {archive}: member {info.filename!r} holds more than the {info.file_size} "
                        "bytes it declares; refusing it."
                    )
                out.write(block)


def safe_extract(archive: Path, target: Path) -> Path:
    """Extract a tar (any compression) or zip ``archive`` into ``target``; unsafe members raise before anything is written."""
    archive, target = Path(archive), Path(target)
    target.mkdir(parents=True, exist_ok=True)
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            infos = zf.infolist()
            for info in infos:
                name = _safe_member_name(info.filename, archive)
                mode = info.external_attr >> 16
                if stat.S_ISLNK(mode):
                    _check_link(name, zf.read(info).decode("utf-8", "replace"), archive, hard=False)
            _check_sizes(archive, [(i.filename, i.file_size, i.compress_size) for i in infos])
            _extract_zip(zf, infos, target, archive)  # never creates links; names were checked above
        return target
    try:
        tf = tarfile.open(archive)
    except (tarfile.TarError, OSError) as exc:
        raise DatasetError(
            f"{archive} is neither a zip nor a readable tar archive ({exc}); re-download it."
        ) from exc
    with tf:
        try:
            members = tf.getmembers()
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise DatasetError(f"archive {archive} is truncated or corrupt ({exc}); re-download it.") from exc
        for m in members:
            name = _safe_member_name(m.name, archive)
            if m.issym():
                _check_link(name, m.linkname, archive, hard=False)
            elif m.islnk():
                _check_link(name, _safe_member_name(m.linkname, archive), archive, hard=True)
            elif not (m.isfile() or m.isdir()):
                raise UnsafeArchiveError(
                    f"archive {archive}: member {m.name!r} is a device/fifo; refusing to extract it."
                )
        _check_sizes(archive, [(m.name, m.size, None) for m in members if m.isfile()])
        try:
            if hasattr(tarfile, "data_filter"):
                tf.extractall(target, members=members, filter="data")
            else:  # pragma: no cover - Python < 3.11.4
                tf.extractall(target, members=members)
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise DatasetError(
                f"extracting {archive} failed ({exc}); the archive is truncated or corrupt - re-download it."
            ) from exc
    return target
