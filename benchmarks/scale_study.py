"""Figures and table of the flows' scale study (protocol ``scale_study``): metric vs training length.

Reads the result store (default ``results/``), keeps the records of the ``scale_study`` protocol's
grid (profile ``cpu``, methods NFAD/BGAD/PaDiM, one known anomaly), and writes into
``reports/scale_study/``:

* ``<dataset>.png`` (and .pdf): per metric, the value at the end of each schedule against the number of
  epochs it trained (passes over the normal training images), one line per method × input size, the
  band spanning the seeds; dotted, the longest schedule's own curve (evaluated after every
  meta-epoch, so under a learning rate not yet decayed); PaDiM (no schedule) as a horizontal line;
* ``README.md``: the same numbers as a table (mean ± std over seeds, seeds, minutes per cell).

    python -m benchmarks.scale_study [--results results] [--out reports/scale_study]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib import ticker

from bgad.bench.protocols import load_protocol
from bgad.bench.report import match_records
from bgad.bench.store import ResultStore
from bgad.fileio import atomic_write_text, atomic_write_with
from bgad.metrics import METRIC_LABELS

REPO = Path(__file__).resolve().parents[1]
METRICS = ("image_auroc", "pixel_auroc", "pro")


def study_frame(results: Path) -> pd.DataFrame:
    """One row per scale-study record: method, dataset, input size, schedule, epochs, metrics, minutes."""
    protocol = load_protocol("scale_study")
    records = [r for r in ResultStore(results).records() if r["config"].get("profile") == protocol.profile]
    ids = set(match_records(protocol, records)["cell_id"]) if records else set()
    rows = []
    for r in records:
        if r["cell_id"] not in ids:
            continue
        c = r["config"]
        per_meta = r.get("counters", {}).get("sub_epochs_per_meta_epoch", 1)
        meta = c.get("meta_epochs")
        last = r["metrics"]["last_epoch"]
        rows.append(
            {
                "dataset": c["dataset"],
                "method": c["method"],
                "seed": c["seed"],
                "size": c["input_size"],
                "meta_epochs": meta,
                "epochs": meta * per_meta if meta else None,
                "minutes": r["timing_seconds"]["total"] / 60,
                # the cell's own learning curve: (epochs trained so far, that meta-epoch's metrics)
                "curve": [((e["meta_epoch"] + 1) * per_meta, e) for e in r["metrics"]["per_epoch"]],
                **{m: last.get(m) for m in METRICS},
            }
        )
    return pd.DataFrame(rows)


def figure(frame: pd.DataFrame, dataset: str, out: Path) -> list[Path]:
    part = frame[frame["dataset"] == dataset]
    metrics = [m for m in METRICS if part[m].notna().any()]
    fig, axes = plt.subplots(
        1, len(metrics), figsize=(max(6.5, 4.6 * len(metrics)), 3.9), squeeze=False, layout="constrained"
    )
    flows = part[part["epochs"].notna()]
    for ax, metric in zip(axes[0], metrics, strict=True):
        for i, ((method, size), group) in enumerate(flows.groupby(["method", "size"])):
            stats = group.groupby("epochs")[metric].agg(["mean", "min", "max"]).sort_index()
            style = "-" if size == 128 else "--"
            ax.plot(stats.index, stats["mean"], style, marker="o", color=f"C{i}", label=f"{method} {size}²")
            ax.fill_between(stats.index, stats["min"], stats["max"], color=f"C{i}", alpha=0.15)
            longest = group[group["epochs"] == group["epochs"].max()]
            curve = (
                pd.DataFrame([(x, e.get(metric)) for c in longest["curve"] for x, e in c], columns=["x", "y"])
                .groupby("x")["y"]
                .mean()
            )
            ax.plot(curve.index, curve.values, ":", color=f"C{i}", lw=1, alpha=0.7)
        for j, (size, group) in enumerate(part[part["epochs"].isna()].groupby("size")):
            ax.axhline(
                group[metric].mean(), color="black", ls=":" if j else "-.", lw=1, label=f"padim {size}²"
            )
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(ticker.ScalarFormatter())
        ax.xaxis.set_minor_formatter(ticker.NullFormatter())
        ax.set_xlabel("epochs trained (passes over the normal images)")
        ax.set_title(METRIC_LABELS[metric])
        ax.legend(fontsize=7)
    fig.suptitle(
        f"{dataset}: end of each schedule (markers; band: min–max over seeds) and\n"
        "the longest schedule's own curve per meta-epoch (dotted); cpu profile, one known anomaly",
        fontsize=9,
    )
    written = []
    for suffix in (".png", ".pdf"):
        target = out / f"{dataset}{suffix}"
        atomic_write_with(target, lambda tmp, fmt=suffix[1:]: fig.savefig(tmp, format=fmt, dpi=110))
        written.append(target)
    plt.close(fig)
    return written


def mean_std(values: pd.Series) -> str:
    """A table cell: mean ± std over seeds (the mean alone for one seed; — for none)."""
    values = values.dropna()
    if values.empty:
        return "—"
    return f"{values.mean():.3f} ± {values.std(ddof=1):.3f}" if len(values) > 1 else f"{values.mean():.3f}"


def table(frame: pd.DataFrame) -> str:
    lines = [
        "| dataset | method | input | meta-epochs | epochs | seeds | image AUROC | pixel AUROC | AU-PRO | minutes per cell |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    keys = ["dataset", "method", "size", "meta_epochs", "epochs"]
    for key, g in frame.fillna({"meta_epochs": 0, "epochs": 0}).groupby(keys):
        dataset, method, size, meta, epochs = key
        lines.append(
            f"| {dataset} | {method} | {size}² | {int(meta) or '—'} | {int(epochs) or '—'} | {len(g)} | "
            f"{mean_std(g['image_auroc'])} | {mean_std(g['pixel_auroc'])} | {mean_std(g['pro'])} | {g['minutes'].mean():.1f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--results", type=Path, default=REPO / "results")
    p.add_argument("--out", type=Path, default=REPO / "reports" / "scale_study")
    a = p.parse_args(argv)
    frame = study_frame(a.results)
    if frame.empty:
        p.error(
            f"no scale_study records in {a.results}; run `bgad-bench run --protocol scale_study --dataset D`"
        )
    a.out.mkdir(parents=True, exist_ok=True)
    for dataset in sorted(frame["dataset"].unique()):
        figure(frame, dataset, a.out)
    text = "\n".join(
        [
            "# Scale study of the flows (benchmarks/scale_study.py)",
            "",
            "The value at the end of each schedule (last meta-epoch), mean ± std over the seeds run. "
            "See docs/flows.md for the reading.",
            "",
            table(frame),
            "",
            *(f"![{d}]({d}.png)" for d in sorted(frame["dataset"].unique())),
            "",
        ]
    )
    atomic_write_text(a.out / "README.md", text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
