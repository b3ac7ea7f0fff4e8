"""What every item of the speed benchmark (``python -m benchmarks.speed``) shares: the report thresholds
(``TARGETS``, the one place they are written), the machine description, the AITEX slices, running one
side of a comparison in a fresh interpreter, peak RSS, and the Markdown table helpers."""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch

from bgad.data.convert import prepare_aitex
from bgad.data.datasets import load_category
from bgad.paths import cache_dir

T = TypeVar("T")

REPO = Path(__file__).resolve().parents[1]
SPEED_MODULE = "benchmarks.speed"
# The raw AITEX copy beside the checkout (../shared/data), or wherever BGAD_AITEX_RAW points.
AITEX_RAW = Path(os.environ.get("BGAD_AITEX_RAW", REPO.parent / "shared" / "data" / "aitex_raw"))


# --------------------------------------------------------------------------------------------------
# the report's thresholds


@dataclass(frozen=True)
class Target:
    """A threshold of the report: a measured value passes if it is ``≥ bound`` (``at_least``, a
    speed-up) or ``≤ bound`` (a difference); ``label`` is how the report writes it."""

    bound: float
    at_least: bool
    unit: str = ""

    def ok(self, measured: float) -> bool:
        return bool(measured >= self.bound if self.at_least else measured <= self.bound)

    @property
    def label(self) -> str:
        return f"{'≥' if self.at_least else '≤'} {self.bound:g}{self.unit}"


TARGETS = {
    "cell": Target(5.0, at_least=True, unit="×"),  # 1: a whole cell, released way / ours
    "eval": Target(3.0, at_least=True, unit="×"),  # 3: evaluation, batch-1 / batched
    "pro": Target(20.0, at_least=True, unit="×"),  # 4: each fast PRO vs the per-threshold loop
    "pro_value": Target(1e-6, at_least=False),  # 4: abs diff of the PRO values (vs reference / loop)
    "fp16_auroc": Target(0.001, at_least=False),  # 5: abs Δ AUROC, fp16 vs fp32 feature cache
}


# --------------------------------------------------------------------------------------------------
# the items


def no_summary(res: dict) -> list[list]:
    return []


@dataclass(frozen=True)
class Item:
    """One benchmark item: ``measure(a, device)`` per device (or ``measure(a)``), its report section
    and summary rows (both from the whole result, by ``itemN`` key), and the child-process side
    ``worker(a, device, side)`` run by ``speed.py --worker itemN:SIDE``, if it has one."""

    number: int
    measure: Callable[..., dict]
    per_device: bool
    section: Callable[[dict], list[str]]
    summary: Callable[[dict], list[list]] = no_summary
    worker: Callable[..., dict] | None = None


def say(msg: str = "") -> None:
    print(msg, flush=True)


def sync(device: torch.device) -> None:
    """Wait for the device's queued work, so that a clock read after it times the work itself."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def evenly_spaced(n: int, k: int) -> np.ndarray:
    """At most ``k`` distinct indices spread evenly over ``range(n)`` (both ends included)."""
    return np.unique(np.linspace(0, n - 1, k).round().astype(int))


def best_time(fn: Callable[[], T], repeats: int = 1) -> tuple[T, float]:
    """``fn``'s result and its fastest time over ``repeats`` runs (noise on a shared machine only ever
    adds time)."""
    best, out = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return out, best


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


# --------------------------------------------------------------------------------------------------
# machine and versions


def machine(threads: int) -> dict:
    model = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {}
    for pkg in ("bgad-bench", "torch", "timm", "FrEIA", "numpy", "scipy", "scikit-learn", "albumentations"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = "not installed"
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": model,
        "cores": os.cpu_count(),
        "torch_threads": threads,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": versions,
        "gpu": gpu or "no GPU on this machine",
    }


def devices() -> list[torch.device]:
    return [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])


def peak_rss_mb(status: str | None = None) -> float:
    """This process's own peak RSS (``VmHWM``; ``/proc/self/status`` unless given its text).

    Not ``ru_maxrss``: on Linux a child's ``ru_maxrss`` starts from its parent's peak at fork, so every
    child of a large benchmark process would report the benchmark's own peak.
    """
    try:
        text = status if status is not None else Path("/proc/self/status").read_text()
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    kilobytes = next(line.split()[1] for line in text.splitlines() if line.startswith("VmHWM:"))
    return int(kilobytes) / 1024


# --------------------------------------------------------------------------------------------------
# data: a prepared AITEX copy and small slices of it


def aitex_root() -> Path:
    root = cache_dir() / "speed" / "aitex"
    if not (root / "aitex").is_dir():
        if not AITEX_RAW.is_dir():
            raise SystemExit(
                f"items 1, 3 and 6 need the raw AITEX copy, not found at {AITEX_RAW}: "
                "set BGAD_AITEX_RAW=/path/to/aitex_raw (or run --only 2,4,5)"
            )
        say(f"preparing AITEX from {AITEX_RAW} into {root} (once)")
        prepare_aitex(AITEX_RAW, root)
    return root


def make_slice(n_train: int, n_test_normal: int, n_test_anomalous: int) -> Path:
    """An MVTec-layout copy of AITEX with the first ``n_train`` normals, the first test normals and
    anomalous test images spread evenly over the sorted defect images (with their masks)."""
    src = aitex_root()
    dst = cache_dir() / "speed" / f"aitex-slice-{n_train}-{n_test_normal}-{n_test_anomalous}"
    if (dst / "aitex").is_dir():
        return dst
    data = load_category("aitex", "aitex", src)
    normals = [s for s in data.test if not s.is_anomalous][:n_test_normal]
    anomalous = [s for s in data.test if s.is_anomalous]
    picks = evenly_spaced(len(anomalous), n_test_anomalous)
    tmp = Path(tempfile.mkdtemp(dir=dst.parent, prefix=f".{dst.name}.tmp-"))
    cat = tmp / "aitex"
    for s in data.train[:n_train]:
        (cat / "train" / "good").mkdir(parents=True, exist_ok=True)
        shutil.copy2(s.image_path, cat / "train" / "good" / s.image_path.name)
    for s in normals + [anomalous[i] for i in picks]:
        (cat / "test" / s.defect_type).mkdir(parents=True, exist_ok=True)
        shutil.copy2(s.image_path, cat / "test" / s.defect_type / s.image_path.name)
        if s.mask_path is not None:
            (cat / "ground_truth" / s.defect_type).mkdir(parents=True, exist_ok=True)
            shutil.copy2(s.mask_path, cat / "ground_truth" / s.defect_type / s.mask_path.name)
    info = json.loads((src / "bgad_dataset.json").read_text())
    info = {k: info[k] for k in ("name", "has_pixel_masks", "categories")}
    (tmp / "bgad_dataset.json").write_text(json.dumps(info, indent=1))
    try:
        os.replace(tmp, dst)
    except OSError:  # made meanwhile by another run
        shutil.rmtree(tmp, ignore_errors=True)
    return dst


# --------------------------------------------------------------------------------------------------
# child processes: each side of a comparison starts fresh, with its own allocator settings


def in_child(a: argparse.Namespace, worker: str, device: torch.device) -> dict:
    """Run ``python -m benchmarks.speed --worker WORKER`` in a fresh interpreter (from the repository
    root, where the package is); its result.json (and the arrays it saved)."""
    with tempfile.TemporaryDirectory(prefix="speed-worker-") as tmp:
        cmd = [
            sys.executable,
            "-m",
            SPEED_MODULE,
            "--worker",
            worker,
            "--worker-out",
            tmp,
            "--threads",
            str(a.threads),
            "--pro-thresholds",
            str(a.pro_thresholds),
            "--device",
            device.type,
        ] + (["--smoke"] if a.smoke else [])
        subprocess.run(cmd, check=True, cwd=REPO)
        out = json.loads((Path(tmp) / "result.json").read_text())
        for name in out.pop("arrays", []):
            out[name] = np.load(Path(tmp) / f"{name}.npy")
        return out


# --------------------------------------------------------------------------------------------------
# Markdown


def fmt(x: float | None, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and np.isnan(x)):
        return "–"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, int):
        return str(x)
    if abs(x) >= 1000 or (abs(x) < 1e-3 and x != 0):
        return f"{x:.{digits}g}" if abs(x) < 1e6 else f"{x:.3e}"
    return f"{x:.{digits}f}"


def table(header: list[str], rows: list[list]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(c if isinstance(c, str) else fmt(c) for c in r) + " |" for r in rows]
    return out + [""]
