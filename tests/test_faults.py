"""Faults of the machine: unwritable or full results folders, unwritable caches, archive bombs."""

from __future__ import annotations

import errno
import zipfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bgad.bench.cli import app
from bgad.data.download import UnsafeArchiveError, safe_extract

TINY = ["--set", "input_size=64"]
RUN = ["run", "-m", "padim", "-c", "weave", *TINY]


def test_an_unwritable_results_folder_is_one_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "results"
    blocker.write_text("a file where the results folder should be")
    result = CliRunner().invoke(app, [*RUN, "--results", str(blocker)])
    assert result.exit_code == 2, result.output
    assert (
        "cannot write" in result.output and "--results" in result.output and "Traceback" not in result.output
    )


def test_a_done_grid_needs_no_writable_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = tmp_path / "results"
    assert CliRunner().invoke(app, [*RUN, "--results", str(store)]).exit_code == 0
    import bgad.bench.store

    def refuse(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(bgad.bench.store, "atomic_write_with", refuse)
    monkeypatch.setattr(bgad.bench.store.ResultStore, "check_writable", lambda self: refuse())
    result = CliRunner().invoke(app, [*RUN, "--results", str(store)])
    assert result.exit_code == 0, result.output
    assert "0 to run" in result.output


def test_a_full_disk_leaves_nothing_that_looks_complete(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import bgad.bench.cell

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "results" / "cells" / "x"))

    monkeypatch.setattr(bgad.bench.cell, "write_artifacts", full)
    result = CliRunner().invoke(app, [*RUN, "--results", str(tmp_path / "results"), "--max-retries", "3"])
    assert result.exit_code == 1, result.output
    assert "the disk is full" in result.output and "Traceback (most recent" not in result.output
    cells = tmp_path / "results" / "cells"
    assert not any(p.is_dir() and "." not in p.name for p in cells.iterdir())  # no complete-looking cell
    assert result.output.count("computing features") <= 2  # a storage error is not retried


def test_an_unwritable_feature_cache_degrades_to_no_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    import bgad.features

    def refuse(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(bgad.features, "atomic_write_with", refuse)
    monkeypatch.setenv("BGAD_CACHE_DIR", str(tmp_path / "cache"))
    result = CliRunner().invoke(app, [*RUN, "--results", str(tmp_path / "results")])
    assert result.exit_code == 0, result.output
    record = json.loads(next((tmp_path / "results" / "cells").glob("*/result.json")).read_text())
    assert "cannot be written" in record["feature_cache"]["disabled"]


def _zip_with(path: Path, name: str, size: int) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(name, b"\0" * size)
    return path


def test_a_zip_bomb_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    archive = _zip_with(tmp_path / "bomb.zip", "images/huge.png", 64 << 20)  # 64 MiB of zeros, ~64 KB packed
    assert archive.stat().st_size < 1 << 20
    target = tmp_path / "out"
    with pytest.raises(UnsafeArchiveError, match="huge.png") as err:
        safe_extract(archive, target)
    assert "fold" in str(err.value)
    assert not any(p.is_file() for p in target.rglob("*"))


def test_a_member_declaring_less_than_it_holds_is_refused(tmp_path: Path) -> None:
    archive = _zip_with(tmp_path / "liar.zip", "a.png", 300)
    data = bytearray(archive.read_bytes())
    # shrink the declared size (local header at offset 22, central directory entry) to 100 bytes
    for marker, offset in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
        at = data.find(marker)
        data[at + offset : at + offset + 4] = (100).to_bytes(4, "little")
    archive.write_bytes(bytes(data))
    with pytest.raises((UnsafeArchiveError, zipfile.BadZipFile)):
        safe_extract(archive, tmp_path / "out")
    written = [p for p in (tmp_path / "out").rglob("*") if p.is_file()]
    assert all(p.stat().st_size <= 100 for p in written)
