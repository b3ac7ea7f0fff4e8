"""Figures from the result store (PNG and PDF): log-likelihood histograms NFAD vs BGAD (paper Fig. 9),
metric-vs-epoch curves (Fig. 3) and anomaly-map panels with ground truth (Fig. 4)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, never a window

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from bgad.fileio import atomic_write_with  # noqa: E402
from bgad.metrics import METRIC_LABELS  # noqa: E402

METRICS = {k: v for k, v in METRIC_LABELS.items() if k != "pro_paper"}  # curves: one PRO is enough


def _save(fig: plt.Figure, path: Path) -> list[Path]:
    path.parent.mkdir(parents=True, exist_ok=True)
    out = []
    for suffix in (".png", ".pdf"):
        target = path.with_suffix(suffix)
        atomic_write_with(
            target, lambda tmp, fmt=suffix[1:]: fig.savefig(tmp, format=fmt, dpi=120, bbox_inches="tight")
        )
        out.append(target)
    plt.close(fig)
    return out


def loglik_histograms(cells: dict[str, Path], title: str, path: Path) -> list[Path]:
    """Rows: methods (e.g. nfad, bgad); columns: feature levels; normal vs anomalous test ℓ."""
    loaded = {
        m: np.load(folder / "loglik_samples.npz")
        for m, folder in cells.items()
        if (folder / "loglik_samples.npz").exists()
    }
    if not loaded:
        return []
    levels = sorted({k.split("_")[0] for data in loaded.values() for k in data.files})
    fig, axes = plt.subplots(
        len(loaded),
        len(levels),
        figsize=(3.6 * len(levels), 2.8 * len(loaded)),
        squeeze=False,
        layout="constrained",
    )
    for r, (method, data) in enumerate(loaded.items()):
        for c, level in enumerate(levels):
            ax = axes[r][c]
            for kind, color in (("normal", "tab:blue"), ("anomalous", "tab:red")):
                key = f"{level}_{kind}"
                if key in data.files and len(data[key]):
                    sns.histplot(
                        data[key],
                        ax=ax,
                        color=color,
                        stat="density",
                        bins=60,
                        alpha=0.45,
                        label=kind,
                        element="step",
                    )
            ax.set_title(f"{method} · {level}", fontsize=9)
            ax.set_xlabel("per-dimension log-likelihood ℓ")
            if r == 0 and c == 0:
                ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def metric_curves(records: list[dict], title: str, path: Path) -> list[Path]:
    """Every evaluated epoch's metrics, mean over seeds per method (shaded: min–max over seeds)."""
    rows = [
        {
            "method": r["config"]["method"],
            "seed": r["config"]["seed"],
            "meta_epoch": h["meta_epoch"],
            "metric": METRICS[m],
            "value": h[m],
        }
        for r in records
        for h in r["metrics"]["per_epoch"]
        for m in METRICS
        if h.get(m) is not None and not np.isnan(h[m])
    ]
    if not rows:
        return []
    frame = pd.DataFrame(rows)
    metrics = [m for m in METRICS.values() if m in set(frame["metric"])]
    fig, axes = plt.subplots(
        1, len(metrics), figsize=(4.2 * len(metrics), 3.4), squeeze=False, layout="constrained"
    )
    for ax, metric in zip(axes[0], metrics, strict=True):
        sns.lineplot(
            data=frame[frame["metric"] == metric],
            x="meta_epoch",
            y="value",
            hue="method",
            errorbar=("pi", 100),
            ax=ax,
            marker="o",
        )
        ax.set_title(metric, fontsize=10)
        ax.set_xlabel("meta-epoch")
    fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def map_panels(folder: Path, title: str, path: Path) -> list[Path]:
    """Test images, ground truth and anomaly maps of one cell (highest/lowest-scored anomalies, top normal)."""
    sample = folder / "map_samples.npz"
    if not sample.exists():
        return []
    data = np.load(sample)
    n = len(data["maps"])
    has_masks = data["masks"].ndim == 3 and data["masks"].shape[1] > 0
    cols = 3 if has_masks else 2
    fig, axes = plt.subplots(n, cols, figsize=(2.4 * cols, 2.5 * n), squeeze=False, layout="constrained")
    vmax = float(np.max(data["maps"].astype(np.float32)))
    for i in range(n):
        axes[i][0].imshow(data["images"][i])
        axes[i][0].set_title(f"{data['paths'][i]} (label {int(data['labels'][i])})", fontsize=7)
        if has_masks:
            axes[i][1].imshow(data["masks"][i], cmap="gray", vmin=0, vmax=1)
            axes[i][1].set_title("ground truth", fontsize=7)
        axes[i][cols - 1].imshow(data["images"][i])
        axes[i][cols - 1].imshow(data["maps"][i].astype(np.float32), cmap="jet", alpha=0.5, vmin=0, vmax=vmax)
        axes[i][cols - 1].set_title(f"anomaly map, score {float(data['scores'][i]):.3g}", fontsize=7)
        for ax in axes[i]:
            ax.axis("off")
    fig.suptitle(title, fontsize=9)
    return _save(fig, path)


def write_figures(records: list[dict], cells_dir: Path, out_dir: Path) -> list[Path]:
    """Per (dataset, category): curves over every seed; for the first seed, histograms and map panels."""
    written: list[Path] = []
    groups: dict[tuple[str, str], list[dict]] = {}
    for rec in records:
        groups.setdefault((rec["config"]["dataset"], rec["config"]["category"]), []).append(rec)
    for (dataset, category), recs in sorted(groups.items()):
        stem = f"{dataset}-{category}"
        setups = sorted({(r["config"]["profile"], r["config"]["backbone"]) for r in recs})
        setup = "; ".join(f"{p}/{b}" for p, b in setups)
        written += metric_curves(
            recs, f"{dataset}/{category}: metrics per evaluated epoch ({setup})", out_dir / f"curves-{stem}"
        )
        seed = min(r["config"]["seed"] for r in recs)
        first = {r["config"]["method"]: cells_dir / r["cell_id"] for r in recs if r["config"]["seed"] == seed}
        pair = {m: first[m] for m in ("nfad", "bgad") if m in first} or first
        written += loglik_histograms(
            pair,
            f"{dataset}/{category}, seed {seed}: test log-likelihoods, normal vs anomalous",
            out_dir / f"loglik-{stem}",
        )
        for method, folder in sorted(first.items()):
            written += map_panels(
                folder, f"{dataset}/{category} · {method} · seed {seed}", out_dir / f"maps-{stem}-{method}"
            )
    return written
