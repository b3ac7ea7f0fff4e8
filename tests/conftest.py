"""Shared test set-up: every test session gets its own cache folder (synthetic data, features)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED_DATA = Path(
    os.environ.get("BGAD_SHARED_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data")
)


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Never read or write the user's ~/.cache/bgad-bench from tests."""
    cache = tmp_path_factory.mktemp("bgad-cache")
    old = os.environ.get("BGAD_CACHE_DIR")
    os.environ["BGAD_CACHE_DIR"] = str(cache)
    yield
    if old is None:
        os.environ.pop("BGAD_CACHE_DIR", None)
    else:
        os.environ["BGAD_CACHE_DIR"] = old


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real raw copies (``../shared/data`` beside the checkout, or ``$BGAD_SHARED_DATA``)."""
    return SHARED_DATA
