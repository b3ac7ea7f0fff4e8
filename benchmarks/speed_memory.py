"""Items 5 and 6 of the speed benchmark, both ``bgad-bench run`` CLI runs in child processes:

5. memory: peak RSS (each child's ``VmHWM``) of bgad quick on synthetic categories, and the fp16
   feature cache's effect on the AUROCs (fp32 vs fp16);
6. scaling: wall time of an nfad quick cell against training normals (AITEX slices, in process), and
   1 vs 2 joblib workers on a small synthetic grid.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.speed_common import TARGETS, Item, fmt, make_slice, peak_rss_mb, say, table, verdict
from bgad.bench.cell import run_cell
from bgad.bench.config import resolve_config
from bgad.data.synthetic import SYNTHETIC_CATEGORIES

# ``bgad-bench`` in a child that leaves its /proc status (for VmHWM) in the file named by argv[1].
CLI_WITH_STATUS = (
    "import atexit, sys\n"
    "out = sys.argv.pop(1)\n"
    "atexit.register(lambda: open(out, 'w').write(open('/proc/self/status').read()))\n"
    "sys.argv[0] = 'bgad-bench'\n"
    "from bgad.bench.cli import app\n"
    "app()\n"
)
SMOKE_SETTINGS = {"input_size": 64, "meta_epochs": 1, "sub_epochs": 1, "phase1_epochs": 1, "warmup_epochs": 1}


def cli_run(args: list[str], results: Path) -> dict:
    """Run ``bgad-bench run ARGS --results RESULTS`` in a child; wall time, peak RSS, metrics."""
    args = ["run", *args, "--results", str(results), "--no-feature-cache"]
    with tempfile.TemporaryDirectory(prefix="speed-cli-") as tmp:
        status_file = Path(tmp) / "status"
        log = Path(tmp) / "log"
        start = time.perf_counter()
        with open(log, "wb") as fh:
            proc = subprocess.run(
                [sys.executable, "-c", CLI_WITH_STATUS, str(status_file), *args],
                stdout=fh,
                stderr=subprocess.STDOUT,
            )
        wall = time.perf_counter() - start
        if proc.returncode:
            output = log.read_text(errors="replace")
            raise RuntimeError(f"bgad-bench {' '.join(args)} failed ({proc.returncode}):\n{output[-3000:]}")
        peak = peak_rss_mb(status_file.read_text())
    records = [json.loads(p.read_text()) for p in sorted(results.glob("cells/*/result.json"))]
    return {
        "cmd": " ".join(args),
        "wall": wall,
        "max_rss_mb": peak,
        "metrics": [r["metrics"]["last_epoch"] for r in records],
        "cells": len(records),
    }


def smoke_sets(a: argparse.Namespace) -> list[str]:
    sets = [f"threads={a.threads}"]
    if a.smoke:
        sets += [f"{k}={v}" for k, v in SMOKE_SETTINGS.items()]
    out = []
    for s in sets:
        out += ["--set", s]
    return out


# --------------------------------------------------------------------------------------------------
# 5. memory and the fp16 feature cache


def fp16_deltas(runs: list[dict], categories: list[str]) -> list[dict]:
    """Per category: abs Δ image and pixel AUROC between the fp32 and fp16 feature caches."""
    deltas = []
    for cat in categories:
        f32 = next(r for r in runs if r["category"] == cat and r["dtype"] == "float32")["metrics"][0]
        f16 = next(r for r in runs if r["category"] == cat and r["dtype"] == "float16")["metrics"][0]
        deltas.append(
            {
                "category": cat,
                "d_image_auroc": abs(f32["image_auroc"] - f16["image_auroc"]),
                "d_pixel_auroc": abs(f32.get("pixel_auroc", np.nan) - f16.get("pixel_auroc", np.nan)),
            }
        )
    return deltas


def item5(a: argparse.Namespace) -> dict:
    categories = ["widget"] if a.smoke else ["widget", "weave"]
    runs = []
    with tempfile.TemporaryDirectory(prefix="speed-mem-") as tmp:
        for cat in categories:
            for dtype in ("float32", "float16"):
                say(f"  [5] bgad quick on synthetic {cat}, feature_dtype={dtype}")
                res = cli_run(
                    ["-m", "bgad", "-c", cat, *smoke_sets(a), "--set", f"feature_dtype={dtype}"],
                    Path(tmp) / f"{cat}-{dtype}",
                )
                runs.append({"category": cat, "dtype": dtype, **res})
        say(f"  [5] bgad quick on synthetic {categories[0]}, float32, glibc default malloc")
        res = cli_run(
            ["-m", "bgad", "-c", categories[0], *smoke_sets(a), "--set", "malloc_tuning=false"],
            Path(tmp) / f"{categories[0]}-default-malloc",
        )
        default_malloc = {"category": categories[0], "dtype": "float32", **res}
    deltas = fp16_deltas(runs, categories)
    worst = max(max(d["d_image_auroc"], d["d_pixel_auroc"]) for d in deltas)
    return {
        "runs": runs,
        "default_malloc_run": default_malloc,
        "deltas": deltas,
        "target": TARGETS["fp16_auroc"].bound,
        "pass": TARGETS["fp16_auroc"].ok(worst),
        "worst_delta": worst,
    }


def summary5(res: dict) -> list[list]:
    if "item5" not in res:
        return []
    d = res["item5"]
    target = TARGETS["fp16_auroc"].label
    return [["5. fp16 features: max abs Δ AUROC", target, fmt(d["worst_delta"], 4), verdict(d["pass"])]]


def section5(res: dict) -> list[str]:
    if "item5" not in res:
        return []
    d = res["item5"]
    L = ["### 5. Memory and the fp16 feature cache", ""]
    L += table(
        ["run", "peak RSS (MB)", "wall (s)", "image AUROC", "pixel AUROC"],
        [
            [
                f"`{r['cmd']}`",
                round(r["max_rss_mb"]),
                r["wall"],
                r["metrics"][0].get("image_auroc"),
                r["metrics"][0].get("pixel_auroc"),
            ]
            for r in [*d["runs"], d["default_malloc_run"]]
        ],
    )
    L += table(
        ["category", "abs Δ image AUROC", "abs Δ pixel AUROC"],
        [[x["category"], x["d_image_auroc"], x["d_pixel_auroc"]] for x in d["deltas"]],
    )
    return L + [
        f"Peak RSS = each child process's own `VmHWM` (the last run: `malloc_tuning=false`, glibc's "
        f"default thresholds). fp16 target ({TARGETS['fp16_auroc'].label}): {verdict(d['pass'])}.",
        "",
    ]


# --------------------------------------------------------------------------------------------------
# 6. scaling


def train_size_rows(a: argparse.Namespace) -> list[dict]:
    """Wall time of one nfad quick cell (in process) per number of training normals, fixed test set."""
    sizes = (2, 3, 4) if a.smoke else (10, 20, 40)
    n_normal, n_anom = (3, 5) if a.smoke else (10, 13)
    rows = []
    for n in sizes:
        root = make_slice(n, n_normal, n_anom)
        axes = {"method": "nfad", "dataset": "aitex", "category": "aitex"}
        overrides = {
            "data_root": str(root),
            "threads": a.threads,
            "feature_cache": False,
        }
        if a.smoke:
            overrides |= SMOKE_SETTINGS
        cfg = resolve_config("quick", overrides, [("speed benchmark", axes)])
        say(f"  [6] nfad quick, {n} training normals")
        with tempfile.TemporaryDirectory(prefix="speed-scale-") as out:
            start = time.perf_counter()
            run_cell(cfg, Path(out))
            rows.append({"n_train": n, "wall": time.perf_counter() - start})
    return rows


def worker_rows(a: argparse.Namespace) -> list[dict]:
    """Wall time of a small grid of nfad cells with the joblib executor, 1 and 2 workers."""
    cats = ["widget", "weave"] if a.smoke else ["widget", "weave", "bolt", "grain"]
    cats = [c for c in cats if c in SYNTHETIC_CATEGORIES] or sorted(SYNTHETIC_CATEGORIES)[: len(cats)]
    rows = []
    with tempfile.TemporaryDirectory(prefix="speed-grid-") as tmp:
        for workers in (1, 2):
            say(f"  [6] joblib executor, {workers} worker(s), {len(cats)} nfad cells")
            args = [
                "-m",
                "nfad",
                *[x for c in cats for x in ("-c", c)],
                "--executor",
                "joblib",
                "--workers",
                str(workers),
            ]
            if a.smoke:
                args += smoke_sets(a)
            res = cli_run(args, Path(tmp) / f"w{workers}")
            rows.append({"workers": workers, "cells": res["cells"], "wall": res["wall"], "cmd": res["cmd"]})
    return rows


def item6(a: argparse.Namespace) -> dict:
    train_rows = train_size_rows(a)
    grid_rows = worker_rows(a)
    return {
        "train_images": train_rows,
        "workers": grid_rows,
        "grid_speedup": grid_rows[0]["wall"] / grid_rows[1]["wall"],
    }


def section6(res: dict) -> list[str]:
    if "item6" not in res:
        return []
    d = res["item6"]
    L = [
        "### 6. Scaling",
        "",
        "Wall time of one nfad quick cell (in process) against training normals, fixed test set:",
        "",
    ]
    L += table(["training normals", "wall (s)"], [[r["n_train"], r["wall"]] for r in d["train_images"]])
    L += table(
        ["joblib workers", "cells", "wall (s)", "command"],
        [[r["workers"], r["cells"], r["wall"], f"`{r['cmd']}`"] for r in d["workers"]],
    )
    return L + [
        f"2 workers vs 1: {d['grid_speedup']:.2f}× (fresh results folder each; the joblib executor gives each "
        "worker cores/workers threads).",
        "",
    ]


ITEM5 = Item(5, item5, per_device=False, section=section5, summary=summary5)
ITEM6 = Item(6, item6, per_device=False, section=section6)
