"""PatchCore on a large memory bank: time and agreement of the approximate coreset selections.

The exact greedy coreset reads the whole bank once per selected patch: on AITEX (1,692 training
images, 433k patches at 128²) that is 43k passes over 220 MB. Two approximations, each a setting
recorded in every result: ``coreset_batch = b`` takes the b farthest patches per pass (the bank read
1/b as often); ``coreset_pool = k`` runs the exact rule over a seeded random pool of k × the coreset
size. This script runs PatchCore with the exact selection and with each variant on the same features
(one cell each, seed 0, the given profile), and writes wall times and metric differences into
``reports/performance.md``.

Target (issue: PatchCore on every dataset): an AITEX cell in ≤ 15 minutes on 2 cores, and image
AUROC (pixel AUROC and PRO where there are masks) within 0.005 of the exact selection.

    python -m benchmarks.patchcore_coreset_speed [--datasets brainmri aitex]
        [--variants coreset_batch=16 coreset_pool=4] [--profile cpu] [--results STORE] [--no-write]

Cells go to a result store (default: a temporary one), so a rerun with the same store only reports.
"""

from __future__ import annotations

import argparse
import platform
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from benchmarks.report_io import REPORT_JSON, REPORT_MD, write_json, write_section
from bgad.bench.api import run_cell

KEY = "patchcore_coreset"
METRICS = ("image_auroc", "pixel_auroc", "pro")
TARGET_MINUTES = 15.0
TARGET_DELTA = 0.005


def parse_variant(text: str) -> dict[str, float]:
    """``coreset_batch=16`` -> {"coreset_batch": 16}; "" (the exact selection) -> {}."""
    if not text:
        return {}
    name, _, value = text.partition("=")
    number = float(value)
    return {name: int(number) if number.is_integer() else number}


def label(variant: dict[str, float]) -> str:
    return ", ".join(f"{k}={v:g}" for k, v in variant.items()) or "exact"


def run_case(dataset: str, variant: dict[str, float], profile: str, results: Path, seed: int) -> dict:
    """One PatchCore cell; its metrics, wall times and coreset counters."""
    record = run_cell("patchcore", dataset, dataset, seed=seed, profile=profile, results=results, **variant)
    last = record["metrics"]["last_epoch"]
    timing = record["timing_seconds"]
    return {
        "dataset": dataset,
        "selection": label(variant),
        "metrics": {m: last[m] for m in METRICS if last.get(m) is not None},
        "total_s": timing["total"],
        "coreset_s": timing["coreset_selection"],
        "bank": record["counters"]["memory_bank_patches"],
        "coreset": record["counters"]["coreset_size"],
    }


def markdown(rows: list[dict], profile: str, seed: int) -> str:
    """The section: one row per (dataset, selection), differences against that dataset's exact run."""
    lines = [
        "## PatchCore on a large bank: approximate coreset selections (benchmarks/patchcore_coreset_speed.py)",
        "",
        f"`python -m benchmarks.patchcore_coreset_speed`, {datetime.now(UTC):%Y-%m-%dT%H:%M} UTC, "
        f"{platform.machine()}, profile `{profile}`, seed {seed}, one cell per row (the other cells of "
        "the suite may have shared the 2 cores). Target: a cell in ≤ 15 min, metrics within 0.005 "
        "of the exact selection.",
        "",
        "| dataset | selection | bank → coreset | coreset selection (s) | cell total (min) | "
        "image AUROC | pixel AUROC | PRO | max \\|Δ\\| vs exact | verdict |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        exact = next(r for r in rows if r["dataset"] == row["dataset"] and r["selection"] == "exact")
        deltas = [
            abs(row["metrics"][m] - exact["metrics"][m]) for m in row["metrics"] if m in exact["metrics"]
        ]
        worst = max(deltas) if deltas else 0.0
        ok = row["total_s"] / 60 <= TARGET_MINUTES and worst <= TARGET_DELTA
        cells = [f"{row['metrics'][m]:.4f}" if m in row["metrics"] else "—" for m in METRICS]
        lines.append(
            f"| {row['dataset']} | {row['selection']} | "
            f"{row['bank']:,} → {row['coreset']:,} | {row['coreset_s']:.1f} | {row['total_s'] / 60:.1f} | "
            + " | ".join(cells)
            + f" | {worst:.4f} | {'PASS' if ok else 'FAIL'} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", nargs="+", default=["brainmri", "aitex"])
    parser.add_argument("--variants", nargs="+", default=["coreset_batch=8", "coreset_batch=32"])
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--results", type=Path, default=None)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    results = args.results or Path(tempfile.mkdtemp(prefix="bgad-patchcore-coreset-"))
    variants = [{}, *(parse_variant(v) for v in args.variants)]
    rows = [run_case(ds, v, args.profile, results, args.seed) for ds in args.datasets for v in variants]
    text = markdown(rows, args.profile, args.seed)
    print(text)
    if not args.no_write:
        write_section(REPORT_MD, KEY, text)
        write_json(REPORT_JSON, KEY, {"profile": args.profile, "seed": args.seed, "rows": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
