"""The data a cell used is the data its id names: content digests, the hash cache, edited files."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bgad.data.content import DecodedCache, HashCache, content_sha256, undecodable_files
from bgad.data.datasets import load_category
from bgad.data.images import DatasetError
from bgad.data.manifest import rows_from_category, write_manifest
from bgad.data.synthetic import ensure_synthetic_dataset


def _copy(tmp_path: Path, name: str = "mine") -> Path:
    root = tmp_path / name
    shutil.copytree(ensure_synthetic_dataset() / "widget", root / "parts")
    return root


def test_a_grey_copy_with_the_same_names_has_another_digest(tmp_path: Path) -> None:
    rgb = _copy(tmp_path, "rgb")
    grey = _copy(tmp_path, "grey")
    for path in (grey / "parts").rglob("*.png"):
        if "ground_truth" not in path.parts:
            Image.open(path).convert("L").convert("RGB").save(path)
    a, b = load_category("folder", "parts", rgb), load_category("folder", "parts", grey)
    assert a.manifest_sha256() == b.manifest_sha256()  # the same file names …
    cache = HashCache(tmp_path / "hashes.json")
    assert content_sha256(a, cache) != content_sha256(b, cache)  # … other bytes, another cell


def test_hashes_are_cached_by_size_and_mtime(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = _copy(tmp_path)
    data = load_category("folder", "parts", root)
    first = content_sha256(data, HashCache(tmp_path / "hashes.json"))
    calls = []
    import bgad.data.content as content

    monkeypatch.setattr(content, "file_sha256", lambda p: calls.append(p) or "x")
    assert content_sha256(data, HashCache(tmp_path / "hashes.json")) == first and not calls
    target = data.train[0].image_path
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(target)  # changed: size and mtime move
    content_sha256(data, HashCache(tmp_path / "hashes.json"))
    assert calls == [target.resolve()]


def test_a_prepared_dataset_edited_by_hand_is_refused_naming_the_file(tmp_path: Path) -> None:
    root = _copy(tmp_path)
    data = load_category("folder", "parts", root)
    write_manifest(root, rows_from_category(data, root))
    content_sha256(load_category("folder", "parts", root), HashCache(tmp_path / "h.json"))  # intact: fine
    edited = data.test[0].image_path
    Image.fromarray(np.full((256, 256, 3), 7, np.uint8)).save(edited)
    with pytest.raises(DatasetError, match=edited.name):
        content_sha256(load_category("folder", "parts", root), HashCache(tmp_path / "h.json"))


def test_an_unwritable_hash_cache_is_skipped(tmp_path: Path) -> None:
    root = _copy(tmp_path)
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("a file where the cache folder should be")  # unwritable, even for root
    cache = HashCache(blocker / "h.json")
    digest = content_sha256(load_category("folder", "parts", root), cache)
    assert len(digest) == 64 and not (blocker / "h.json").exists()


def _denied(path: object) -> None:
    raise PermissionError(13, "Permission denied", str(path))


def test_an_unreadable_image_is_named_with_the_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``chmod 000`` on an image (simulated: tests run as root, who reads it anyway)."""
    import bgad.data.content as content

    data = load_category("folder", "parts", _copy(tmp_path))
    monkeypatch.setattr(content, "file_sha256", _denied)
    with pytest.raises(DatasetError, match=f"cannot read {data.train[0].image_path}: .*chmod a\\+r"):
        content_sha256(data, HashCache(tmp_path / "h.json"))


def test_an_image_that_cannot_be_opened_is_not_called_corrupt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bgad.data.images import read_image

    path = ensure_synthetic_dataset() / "widget" / "train" / "good" / "000.png"
    monkeypatch.setattr(Image, "open", _denied)
    with pytest.raises(DatasetError, match="chmod a\\+r") as exc:
        read_image(path)
    assert "corrupt" not in str(exc.value)


def test_decoding_is_remembered_by_content(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import bgad.data.content as content

    hashes, decoded = HashCache(tmp_path / "h.json"), DecodedCache(tmp_path / "d.json")
    assert undecodable_files(load_category("folder", "parts", _copy(tmp_path, "a")), hashes, decoded) == []
    monkeypatch.setattr(content, "read_image", _denied)  # would fail if anything were decoded again
    copy = load_category("folder", "parts", _copy(tmp_path, "b"))  # other paths, the same bytes
    assert undecodable_files(copy, HashCache(tmp_path / "h.json"), DecodedCache(tmp_path / "d.json")) == []
    broken = copy.test[-1].image_path
    broken.write_bytes(b"not a png")
    monkeypatch.undo()
    (problem,) = undecodable_files(copy, HashCache(tmp_path / "h.json"), DecodedCache(tmp_path / "d.json"))
    assert str(broken) in problem and "corrupt" in problem
