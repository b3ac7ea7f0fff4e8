"""Throughput on a shared machine: the README's main job alone, as 2 and 3 copies at once, and as a
4-cell grid on 2 joblib workers.

Every copy is a real ``bgad-bench run`` process with its own result store; all share one feature
cache, warmed by an untimed run first, so every timed run does the same work. "Before" is the
package with the thread count fixed at the machine's cores (``--set threads=N``), which is what it
did before threads were fitted to the free cores (``bgad/threads.py``); "now" is the default.

Target (issue: runs that hold up on a shared machine): with N copies at once each copy takes at
most 1.5·N × the alone time (fair share is N×), and the quiet time is at most 5 % above "before".

    python -m benchmarks.load [--repeats 2] [--before-under-load] [--cap-s 1200] [--no-write]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

from benchmarks.report_io import REPORT_JSON, REPORT_MD, write_json, write_section

KEY = "load"
BGAD = str(Path(sys.executable).with_name("bgad-bench"))


def run_copies(n: int, extra: list[str], cache: Path, work: Path, cap_s: float) -> list[float | None]:
    """Start ``n`` main-job processes at once; each one's wall time (None: still running at ``cap_s``)."""

    def one(i: int) -> float | None:
        store = Path(tempfile.mkdtemp(dir=work, prefix=f"store{i}-"))
        env = dict(os.environ, BGAD_CACHE_DIR=str(cache))
        start = time.perf_counter()
        try:
            subprocess.run(
                [BGAD, "run", "--results", str(store), *extra],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                timeout=cap_s,
                check=True,
            )
        except subprocess.TimeoutExpired:
            return None
        finally:
            shutil.rmtree(store, ignore_errors=True)
        return time.perf_counter() - start

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(one, range(n)))


def measure(args: argparse.Namespace) -> dict:
    cpus = os.cpu_count() or 1
    before = ["--set", f"threads={cpus}"]
    results: dict = {"alone": {"before": [], "now": []}, "copies": {}, "joblib": {}}
    with tempfile.TemporaryDirectory(prefix="bgad-load-") as tmp:
        work = Path(tmp)
        cache = work / "cache"
        print("warming the feature cache (untimed)", flush=True)
        run_copies(1, [], cache, work, args.cap_s)
        for r in range(args.repeats):  # alternate, so drift hits both sides alike
            for side, extra in (("before", before), ("now", [])):
                (t,) = run_copies(1, extra, cache, work, args.cap_s)
                results["alone"][side].append(t)
                print(f"alone {side} #{r + 1}: {t:.1f} s", flush=True)
        sides = [("now", [])] + ([("before", before)] if args.before_under_load else [])
        for n in (2, 3):
            for side, extra in sides:
                times = run_copies(n, extra, cache, work, args.cap_s)
                results["copies"][f"{n}-{side}"] = times
                print(f"{n} copies {side}: {times}", flush=True)
        for workers in (1, 2):
            (t,) = run_copies(1, ["--executor", "joblib", "--workers", str(workers)], cache, work, args.cap_s)
            results["joblib"][str(workers)] = t
            print(f"4-cell grid, joblib {workers} worker(s): {t:.1f} s", flush=True)
    results["machine"] = {
        "cpus": cpus,
        "processor": platform.processor() or platform.machine(),
        "load_before": os.getloadavg(),
        "date": datetime.now(UTC).isoformat(timespec="minutes"),
        "cap_s": args.cap_s,
    }
    return results


def markdown(r: dict) -> str:
    alone_now = min(r["alone"]["now"])
    alone_before = min(r["alone"]["before"])
    quiet = alone_now / alone_before
    m = r["machine"]
    lines = [
        "## Throughput on a shared machine (benchmarks/load.py)",
        "",
        f"`python -m benchmarks.load`, {m['date']} UTC, {m['cpus']} cores ({m['processor']}). The README's "
        "main job (4 quick cells on the synthetic dataset) as separate `bgad-bench run` processes, each "
        "with its own result store, one shared warm feature cache. *before*: threads fixed at the core "
        "count (`--set threads=N`, the old behaviour); *now*: threads fitted to the free cores "
        "(`bgad/threads.py`). Alone: fastest of "
        f"{len(r['alone']['now'])} alternating runs.",
        "",
        "| run | wall time per copy (s) | × alone (now) | target |",
        "| --- | --- | --- | --- |",
        f"| alone, before | {alone_before:.1f} | | |",
        f"| alone, now | {alone_now:.1f} | 1.00 | ≤ 1.05 × before: **{quiet:.3f}×, {'PASS' if quiet <= 1.05 else 'FAIL'}** |",
    ]
    for key, times in r["copies"].items():
        n, side = key.split("-")
        done = [t for t in times if t is not None]
        worst = max(done) if len(done) == len(times) else None
        shown = ", ".join(f"{t:.1f}" if t is not None else f"> {m['cap_s']:.0f} (stopped)" for t in times)
        limit = 1.5 * int(n)
        if worst is None:
            ratio, verdict = f"> {m['cap_s'] / alone_now:.1f}", "FAIL"
        else:
            ratio, verdict = f"{worst / alone_now:.2f}", "PASS" if worst / alone_now <= limit else "FAIL"
        target = f"≤ {limit:.1f}: **{verdict}**" if side == "now" else "(reference)"
        lines.append(f"| {n} copies at once, {side} | {shown} | {ratio} | {target} |")
    one, two = r["joblib"]["1"], r["joblib"]["2"]
    lines += [
        f"| 4-cell grid, `--executor joblib --workers 1` | {one:.1f} | {one / alone_now:.2f} | |",
        f"| 4-cell grid, `--executor joblib --workers 2` | {two:.1f} | {two / alone_now:.2f} | |",
        "",
        "Fair share for N copies is N × alone. A copy that ran past the cap was stopped; its ratio is a "
        "lower bound. Every result records the thread counts it ran with "
        "(`provenance.threads.seconds_per_thread_count`) and the OpenMP variables in effect.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=2, help="alone runs per side, alternating (fastest kept)")
    p.add_argument(
        "--before-under-load", action="store_true", help="also run 2 and 3 copies of the old behaviour"
    )
    p.add_argument("--cap-s", type=float, default=1200.0, help="stop a copy after this many seconds")
    p.add_argument("--no-write", action="store_true", help="print only; leave reports/ alone")
    args = p.parse_args(argv)
    results = measure(args)
    text = markdown(results)
    print(text)
    if not args.no_write:
        write_section(REPORT_MD, KEY, text)
        write_json(REPORT_JSON, KEY, results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
