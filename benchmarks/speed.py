"""Speed benchmark: a cell end to end, the flow step, evaluation, PRO, memory and scaling.

Each item is a side-by-side measurement in one run, against the released code's way of working
(``benchmarks/released_way.py``), with the metrics compared wherever the math is the same:

1. a whole BGAD cell (B6 backbone, random weights) on an AITEX slice: ours (``run_cell``: cached
   features, batched evaluation, fast PRO) vs the released way (timm's ``features_only`` encoder per
   image per epoch, batch-1 evaluation, BGAD's per-threshold connected-component PRO); target ≥ 5×,
   each side run twice (alternating) and its fastest run kept;
2. the flow training step (forward + backward + Adam) in fibers/s per level, Lite0 and B6 channel
   sizes, the positional code per fiber (released) or per grid row and column (``shared_positions``),
   with glibc's default malloc and with ours, next to the measured fp32 matmul rate;
3. test-set scoring: batched vs batch-1 images/s, with the maps compared; target ≥ 3×;
4. PRO: ``pro_auc`` and ``pro_auc_paper`` vs the released per-threshold loop on 100 maps of 256²;
   target ≥ 20× each, values equal to 1e-6;
5. memory: peak RSS of a quick-profile CLI run, and the fp16 feature cache's effect on AUROC;
6. scaling: wall time vs number of training images, and 1 vs 2 joblib workers on a small grid.

Each side of items 1–3 runs in a fresh interpreter (``--worker``), so neither inherits the other's
warm caches and each has its own allocator: ours raises glibc's malloc thresholds
(``bgad/bench/allocator.py``) as every ``run_cell`` does; the released way runs with glibc's defaults, as the
released code does, and once more with our thresholds so the gain of the allocator alone is visible.

This file is the entry point (options, running the chosen items, the report); each item's
measurement and report section live in ``speed_cell.py`` (1), ``speed_flow.py`` (2),
``speed_eval.py`` (3), ``speed_pro.py`` (4) and ``speed_memory.py`` (5, 6); the targets above, the
machine description, the AITEX slices and the child processes in ``speed_common.py``.

It prints everything and rewrites only its own section of ``reports/performance.md`` (between
``<!-- speed:start -->`` and ``<!-- speed:end -->``) and the ``"speed"`` key of
``reports/performance.json`` (through ``report_io.py``).

    python -m benchmarks.speed [--smoke] [--only 1,4] [--threads N] [--pro-thresholds N] [--no-write]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from benchmarks import speed_cell, speed_eval, speed_flow, speed_memory, speed_pro
from benchmarks.report_io import REPORT_JSON, REPORT_MD, markers, write_json, write_section
from benchmarks.speed_common import devices, machine, peak_rss_mb, say, table
from bgad.bench.allocator import malloc_settings, tune_malloc

KEY = "speed"
ITEMS = (
    speed_cell.ITEM,
    speed_flow.ITEM,
    speed_eval.ITEM,
    speed_pro.ITEM,
    speed_memory.ITEM5,
    speed_memory.ITEM6,
)


def run_worker(a: argparse.Namespace) -> int:
    """The child's side: ``item1:SIDE``, ``item2:MALLOC`` or ``item3:SIDE``; writes result.json."""
    item, _, side = a.worker.partition(":")
    device = torch.device(a.device)
    torch.set_num_threads(a.threads)
    if side.endswith("tuned_malloc") or side == "ours":
        tune_malloc()
    fn = {f"item{it.number}": it.worker for it in ITEMS if it.worker is not None}[item]
    out = fn(a, device, side)
    out["malloc"] = malloc_settings()
    out["max_rss_mb"] = peak_rss_mb()
    arrays = {k: out.pop(k) for k in list(out) if isinstance(out[k], np.ndarray)}
    for name, value in arrays.items():
        np.save(Path(a.worker_out) / f"{name}.npy", value)
    out["arrays"] = sorted(arrays)
    (Path(a.worker_out) / "result.json").write_text(json.dumps(out, default=float))
    return 0


# --------------------------------------------------------------------------------------------------
# report


def markdown(res: dict) -> str:
    """The report: the run's header, the summary of the targets, then each item's own section."""
    m = res["machine"]
    L = [
        "## Speed (benchmarks/speed.py)",
        "",
        f"Run {m['date']}{' — **SMOKE run: tiny sizes, ratios not meaningful**' if res['smoke'] else ''}. "
        f"Machine: {m['cpu']}, {m['cores']} cores, torch threads {m['torch_threads']}; GPU: {m['gpu']}. "
        f"Python {m['python']}; " + ", ".join(f"{k} {v}" for k, v in m["versions"].items()) + ".",
        "",
        f"Command: `{res['command']}`. Raw numbers: `reports/performance.json` (key `speed`).",
        "",
    ]
    summary = [row for item in ITEMS for row in item.summary(res)]
    if summary:
        L += ["### Summary", ""] + table(["item", "target", "measured", "verdict"], summary)
    for item in ITEMS:
        L += item.section(res)
    if m["gpu"].startswith("no GPU"):
        L += ["No GPU on this machine: all numbers are CPU numbers.", ""]
    return "\n".join(L).rstrip() + "\n"


# --------------------------------------------------------------------------------------------------
# command line


def parse_args(argv: list[str] | None) -> tuple[argparse.ArgumentParser, argparse.Namespace]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--smoke", action="store_true", help="tiny sizes (< 60 s); ratios not meaningful")
    p.add_argument("--only", default="1,2,3,4,5,6", help="comma-separated items to run (1..6)")
    p.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: 1 with --smoke, else all cores)"
    )
    p.add_argument(
        "--pro-thresholds",
        type=int,
        default=None,
        help="thresholds of the released PRO loop actually timed (the rest extrapolated); default 1000 (all)",
    )
    p.add_argument(
        "--cell-repeats",
        type=int,
        default=None,
        help="runs of each side of item 1's verdict, alternating; the fastest counts (default 2, 1 with --smoke)",
    )
    p.add_argument("--no-write", action="store_true", help="print only; leave reports/ alone")
    p.add_argument("--report", type=Path, default=REPORT_MD)
    p.add_argument("--json", type=Path, default=REPORT_JSON)
    p.add_argument("--worker", help=argparse.SUPPRESS)  # internal: one side of items 1-3, in a child
    p.add_argument("--worker-out", help=argparse.SUPPRESS)
    p.add_argument("--device", default="cpu", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    a.threads = a.threads or (1 if a.smoke else os.cpu_count() or 1)
    a.pro_thresholds = a.pro_thresholds or 1000
    a.cell_repeats = a.cell_repeats or (1 if a.smoke else 2)
    return p, a


def limit_threads(a: argparse.Namespace) -> None:
    torch.set_num_threads(a.threads)
    if a.smoke:  # one thread everywhere, children included (items 5, 6); see README on BLAS threads
        for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[var] = "1"
        threadpool_limits(1)


def run_items(a: argparse.Namespace, items: set[int], res: dict) -> None:
    for item in ITEMS:
        if item.number not in items:
            continue
        t0 = time.perf_counter()
        say(f"item {item.number} ...")
        res[f"item{item.number}"] = (
            [item.measure(a, d) for d in devices()] if item.per_device else item.measure(a)
        )
        torch.set_num_threads(a.threads)  # run_cell sets its own
        say(f"item {item.number} done in {time.perf_counter() - t0:.1f} s")


def main(argv: list[str] | None = None) -> int:
    p, a = parse_args(argv)
    if a.worker:
        return run_worker(a)
    items = {int(x) for x in a.only.split(",") if x.strip()}
    if not items <= set(range(1, 7)):
        p.error("--only takes items 1..6")
    limit_threads(a)
    warnings.filterwarnings("ignore", category=RuntimeWarning, message="pro_auc_paper is undefined")
    tune_malloc()  # what run_cell does: the in-process items (3's pure batching, 4, 6) run as ours
    start = time.perf_counter()
    res: dict = {
        "smoke": a.smoke,
        "machine": machine(a.threads),
        "command": "python -m benchmarks.speed " + " ".join(argv or sys.argv[1:]),
        "malloc": malloc_settings(),
    }
    m = res["machine"]
    say(f"machine: {m['cpu']}, {m['cores']} cores, threads {a.threads}; GPU: {m['gpu']}")
    run_items(a, items, res)
    res["seconds_total"] = time.perf_counter() - start
    res["self_max_rss_mb"] = peak_rss_mb()
    text = markdown(res)
    say("")
    say(text)
    if not a.no_write:
        write_section(a.report, KEY, text)
        write_json(a.json, KEY, res)
        start_marker, end_marker = markers(KEY)
        say(f"wrote {a.report} (section {start_marker}…{end_marker}) and {a.json} (key '{KEY}')")
    say(f"total {res['seconds_total']:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
