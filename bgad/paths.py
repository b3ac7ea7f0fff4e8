"""Where bgad-bench keeps generated data and caches. Never relative to the working directory."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """Root of every cache (synthetic dataset, feature cache, downloads): ``$BGAD_CACHE_DIR`` or ``~/.cache/bgad-bench``."""
    env = os.environ.get("BGAD_CACHE_DIR")
    base = Path(env).expanduser() if env else Path.home() / ".cache" / "bgad-bench"
    return base.resolve()


def data_dir() -> Path:
    """Default parent of prepared datasets: ``$BGAD_DATA_DIR`` or ``<cache_dir>/data``; dataset NAME lives in ``data_dir()/NAME``."""
    env = os.environ.get("BGAD_DATA_DIR")
    return Path(env).expanduser().resolve() if env else cache_dir() / "data"


def work_dir() -> Path:
    """Where runs and reports go by default: ``$BGAD_WORK_DIR`` or ``~/bgad-bench``.

    Never the package's (or the repository's) own ``results/`` and ``reports/``: those hold the
    committed reference results and are written only when asked (``--results results``).
    """
    env = os.environ.get("BGAD_WORK_DIR")
    return (Path(env).expanduser() if env else Path.home() / "bgad-bench").resolve()
