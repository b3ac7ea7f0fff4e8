"""The suite's only ways to write a file or a folder and to hash a file.

Everything is written under a temporary name in the target's folder and renamed into place, so a
reader (another worker, a crash's survivor) sees either the old complete file or the new complete
one, never a half-written one. Errors of the file system (disk full, read-only folder) surface as
``StorageError`` naming the path and what to do.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from bgad.errors import UserError

FILE_MODE = 0o644  # results are shared: readable by the group and others, like their folders
DIR_MODE = 0o755


class StorageError(UserError, OSError):
    """A file or folder could not be written; the message names it and the fix."""

    def __str__(self) -> str:
        return self.strerror or super().__str__()  # the message, without OSError's "[Errno N]"


def storage_error(path: Path, exc: OSError, hint: str = "") -> StorageError:
    """A ``StorageError`` that says what went wrong with ``path`` in words, plus ``hint``."""
    reason = {
        errno.ENOSPC: "the disk is full",
        errno.EDQUOT: "the disk quota is exhausted",
        errno.EROFS: "the file system is read-only",
        errno.EACCES: "permission denied",
        errno.EPERM: "permission denied",
        errno.ENOTDIR: "a file is in the way of the folder",
    }.get(exc.errno or 0, exc.strerror or str(exc))
    message = f"cannot write {path}: {reason}"
    return StorageError(exc.errno or 0, f"{message}. {hint}".strip() if hint else message)


def check_writable_folder(folder: Path, hint: str) -> None:
    """Create ``folder`` if needed and write a probe file into it, so a command fails before its work,
    not after: a ``StorageError`` that names the folder (a file in its place, read-only) and ``hint``."""
    if folder.exists() and not folder.is_dir():
        raise StorageError(errno.ENOTDIR, f"cannot write {folder}: it is a file, not a folder. {hint}")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".write-test-")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise storage_error(folder, exc, hint) from exc


def file_sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes, read in blocks (``hashlib.file_digest``)."""
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def atomic_write_bytes(path: str | os.PathLike, data: bytes, mode: int = FILE_MODE) -> None:
    """Write ``data`` to ``path`` through a temporary sibling and a rename."""
    atomic_write_with(path, lambda tmp: Path(tmp).write_bytes(data), mode)


def atomic_write_text(path: str | os.PathLike, text: str, mode: int = FILE_MODE) -> None:
    atomic_write_bytes(path, text.encode(), mode)


def atomic_write_with(
    path: str | os.PathLike, writer: Callable[[Path], object], mode: int = FILE_MODE
) -> None:
    """Let ``writer`` fill a temporary sibling of ``path`` (e.g. ``df.to_csv``), then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        writer(tmp)
        tmp.chmod(mode)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_directory(final: str | os.PathLike, mode: int = DIR_MODE) -> Iterator[Path]:
    """Yield a temporary sibling folder to fill; on success it is renamed to ``final``.

    If ``final`` appeared meanwhile (another worker finished first) the first one wins and ours is
    discarded. On an error the temporary folder is removed and the error propagates.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.tmp-"))
    work.chmod(mode)  # mkdtemp makes it private; shared stores must stay readable
    try:
        yield work
        try:
            os.replace(work, final)
        except OSError as exc:
            if not final.exists():
                raise
            del exc  # lost the race: the other copy is as good as ours
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)
