"""Figures from the result store (PNG and PDF): log-likelihood histograms NFAD vs BGAD (paper Fig. 9),
metric-vs-epoch curves (Fig. 3) and anomaly-map panels with ground truth (Fig. 4)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, never a window

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.ticker import MaxNLocator

from bgad.bench.method_registry import METHODS, ROUND_NAMES
from bgad.fileio import atomic_write_with
from bgad.metrics import METRIC_LABELS

METRICS = {k: v for k, v in METRIC_LABELS.items() if k != "pro_paper"}  # curves: one PRO is enough

#: Each kind of figure file (the first word of its name: ``curves-<setup>.png``) and what it shows.
FIGURE_KINDS = {
    "curves": "metrics after every meta-epoch (flows) or epoch (DevNet, DRA), mean over seeds (band: min–max); "
    "one-pass methods as lines",
    "loglik": "test log-likelihoods per level, normal vs anomalous, NFAD vs BGAD (BGAD's boundaries drawn)",
    "maps": "test images, ground truth and anomaly maps: the top- and bottom-scored anomalies, the top normal",
}


# No creation date and no software version in the files: the same figure is the same bytes, so
# rendering unchanged results again leaves committed figures unchanged.
_METADATA = {"png": {"Software": None}, "pdf": {"CreationDate": None, "Creator": None, "Producer": None}}


def _save(fig: plt.Figure, path: Path) -> list[Path]:
    path.parent.mkdir(parents=True, exist_ok=True)
    out = []
    for fmt in ("png", "pdf"):
        target = path.with_suffix(f".{fmt}")
        atomic_write_with(
            target,
            lambda tmp, fmt=fmt: fig.savefig(
                tmp, format=fmt, dpi=120, bbox_inches="tight", metadata=_METADATA[fmt]
            ),
        )
        out.append(target)
    plt.close(fig)
    return out


def _level_names(record: dict, levels: list[str]) -> dict[str, str]:
    """``level0`` -> ``level 0 (stride 4)``, from the backbone the record ran on."""
    strides = record.get("backbone", {}).get("strides") or []
    names = {}
    for level in levels:
        i = int(level.removeprefix("level"))
        names[level] = f"level {i} (stride {strides[i]})" if i < len(strides) else f"level {i}"
    return names


def _boundaries(record: dict, normal: np.ndarray) -> tuple[float, float] | None:
    """BGAD's b_n and b_a in ℓ units, estimated from the normal test fibers' ℓ (the β-quantile; b_a = b_n − τ·ν)."""
    cfg = record["config"]
    if cfg.get("method") not in ("bgad", "bgad_cc", "bgad_wo") or not len(normal):
        return None
    b_n = float(np.quantile(normal, cfg["beta"]))
    return b_n, b_n - cfg["tau"] * cfg["normalizer"]


def loglik_histograms(cells: dict[str, tuple[Path, dict]], title: str, path: Path) -> list[Path]:
    """Rows: methods (e.g. nfad, bgad); columns: feature levels on a shared x-range; normal vs anomalous ℓ.

    For BGAD the normal boundary b_n and the anomalous one b_a are drawn (estimated on the test set's
    normal fibers, as the training estimates them on each chunk's).
    """
    loaded = {
        m: (np.load(f / "loglik_samples.npz"), rec)
        for m, (f, rec) in cells.items()
        if (f / "loglik_samples.npz").exists()
    }
    if not loaded:
        return []
    levels = sorted({k.split("_")[0] for data, _ in loaded.values() for k in data.files})
    names = _level_names(next(iter(loaded.values()))[1], levels)
    fig, axes = plt.subplots(
        len(loaded),
        len(levels),
        figsize=(3.6 * len(levels), 2.8 * len(loaded)),
        squeeze=False,
        layout="constrained",
    )
    for c, level in enumerate(levels):
        values = np.concatenate(
            [d[k] for d, _ in loaded.values() for k in d.files if k.startswith(level + "_")]
        )
        lo, hi = np.percentile(values, [0.5, 99.9]) if len(values) else (0.0, 1.0)
        bounds = {
            m: _boundaries(rec, d[f"{level}_normal"] if f"{level}_normal" in d.files else np.array([]))
            for m, (d, rec) in loaded.items()
        }
        lo = min([lo] + [b[1] - 0.1 * (hi - lo) for b in bounds.values() if b])  # b_a in view
        for r, (method, (data, _record)) in enumerate(loaded.items()):
            _histogram_panel(axes[r][c], data, level, (lo, hi), bounds[method])
            axes[r][c].set_title(f"{method} · {names[level]}", fontsize=9)
            if c == 0:
                axes[r][c].legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def _histogram_panel(
    ax: plt.Axes, data: np.lib.npyio.NpzFile, level: str, x_range: tuple[float, float], bounds: tuple | None
) -> None:
    """One level of one method: normal and anomalous ℓ as step histograms, BGAD's b_n and b_a if any."""
    lo, hi = x_range
    for kind, color in (("normal", "tab:blue"), ("anomalous", "tab:red")):
        key = f"{level}_{kind}"
        if key in data.files and len(data[key]):
            sns.histplot(
                data[key],
                ax=ax,
                color=color,
                stat="density",
                bins=np.linspace(lo, hi, 61),
                alpha=0.45,
                label=kind,
                element="step",
            )
    if bounds:
        ax.axvline(bounds[0], color="black", lw=1, label="b_n")
        ax.axvline(bounds[1], color="black", lw=1, ls="--", label="b_a")
    ax.set_xlim(lo, hi)
    ax.set_xlabel("per-dimension log-likelihood ℓ")


def metric_curves(records: list[dict], title: str, path: Path, x_label: str = "meta-epoch") -> list[Path]:
    """Every evaluated epoch's metrics, mean over seeds per method (shaded: min–max over seeds).

    Methods fitted in one pass (PaDiM, PatchCore) are horizontal reference lines, not a lone dot.
    """
    one_shot = {r["config"]["method"] for r in records if not METHODS.get(r["config"]["method"]).iterative}
    rows = [
        {
            "method": r["config"]["method"],
            "seed": r["config"]["seed"],
            "meta_epoch": h["meta_epoch"] + 1,
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
        part = frame[frame["metric"] == metric]
        curves = part[~part["method"].isin(one_shot)]
        if len(curves):
            sns.lineplot(
                data=curves, x="meta_epoch", y="value", hue="method", errorbar=("pi", 100), ax=ax, marker="o"
            )
        for i, method in enumerate(sorted(one_shot & set(part["method"]))):
            level = part[part["method"] == method]["value"].mean()
            ax.axhline(level, color=f"C{7 + i}", ls="--", lw=1.2, label=f"{method} (one pass)")
        ax.legend(fontsize=7)
        ax.set_title(metric, fontsize=10)
        ax.set_xlabel(x_label)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # rounds are whole: no tick at epoch 1.5
    fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def _defect_types(folder: Path) -> dict[str, str]:
    """File name -> defect type, from the cell's ``scores.csv``."""
    try:
        frame = pd.read_csv(folder / "scores.csv")
    except (OSError, ValueError):
        return {}
    return {Path(p).name: t for p, t in zip(frame["path"], frame["defect_type"], strict=True)}


def _map_range(maps: np.ndarray, labels: np.ndarray, masks: np.ndarray | None) -> tuple[float, float]:
    """The maps' colour range: from the median score of the normal pixels shown (those of normal
    images, and outside the ground truth of anomalous ones) to the highest score shown.

    A scale from 0 paints a texture red edge to edge (AITEX: every fabric pixel scores near the top),
    hiding the defect; from the normal pixels' median up, what is coloured is what scores above a
    normal pixel, as the pixel-level metric compares them.
    """
    normal = np.broadcast_to(labels.reshape(-1, 1, 1) == 0, maps.shape)
    if masks is not None and masks.shape == maps.shape:
        normal = normal | (masks == 0)
    low = float(np.median(maps[normal])) if normal.any() else float(maps.min())
    high = float(maps.max())
    return low, max(high, low + 1e-6)


def map_panels(folder: Path, title: str, path: Path) -> list[Path]:
    """Test images, ground truth and anomaly maps of one cell (highest/lowest-scored anomalies, top normal).

    One colour scale for all maps (its bar on the right, ``_map_range``); each row names the image,
    its label and defect type, and its own image score.
    """
    sample = folder / "map_samples.npz"
    if not sample.exists():
        return []
    data = np.load(sample)
    types = _defect_types(folder)
    n = len(data["maps"])
    has_masks = data["masks"].ndim == 3 and data["masks"].shape[1] > 0
    cols = 3 if has_masks else 2
    fig, axes = plt.subplots(
        n, cols, figsize=(2.4 * cols + 0.6, 2.5 * n), squeeze=False, layout="constrained"
    )
    maps = data["maps"].astype(np.float32)
    low, high = _map_range(maps, data["labels"], data["masks"] if has_masks else None)
    shown = None
    for i in range(n):
        name = str(data["paths"][i])
        label = "anomalous" if int(data["labels"][i]) else "normal"
        kind = types.get(name, "")
        axes[i][0].imshow(data["images"][i])
        axes[i][0].set_title(
            f"{name}\n{label}" + (f" · {kind}" if kind and kind != "good" else ""), fontsize=7
        )
        if has_masks:
            axes[i][1].imshow(data["masks"][i], cmap="gray", vmin=0, vmax=1)
            axes[i][1].set_title("ground truth", fontsize=7)
        axes[i][cols - 1].imshow(data["images"][i])
        shown = axes[i][cols - 1].imshow(  # at most a typical normal pixel: the image, uncoloured
            np.ma.masked_less_equal(maps[i], low), cmap="jet", alpha=0.5, vmin=low, vmax=high
        )
        axes[i][cols - 1].set_title(f"anomaly map · image score {float(data['scores'][i]):.3g}", fontsize=7)
        for ax in axes[i]:
            ax.axis("off")
    fig.colorbar(
        shown,
        ax=axes[:, cols - 1].tolist(),
        shrink=0.6,
        label=f"anomaly score: uncoloured up to {low:.3g} (median normal pixel shown), red at {high:.3g} (highest)",
    )
    fig.suptitle(title, fontsize=9)
    return _save(fig, path)


def _setup(rec: dict) -> tuple:
    """What a figure may draw together: the same data, profile, input size and known anomalies."""
    c = rec["config"]
    subset = "-".join(t for t in (c.get("train_types"), c.get("test_types")) if t)
    known = f"k{c.get('n_known_anomalies', 0)}" + (
        f"-{c['anomaly_defect_type']}" if c.get("anomaly_defect_type") else ""
    )
    if subset:
        known += "-" + hashlib.sha256(subset.encode()).hexdigest()[:6]
    return c["dataset"], c["category"], c["profile"], c["input_size"], known


def _schedule(rec: dict) -> tuple[str, int] | None:
    """(the setting that counts a method's rounds, its value); None for a method fitted in one pass."""
    method = rec["config"]["method"]
    spec = METHODS.get(method) if method in METHODS.names() else None  # a method this version lacks
    return (spec.rounds, rec["config"].get(spec.rounds)) if spec and spec.iterative else None


def write_figures(records: list[dict], cells_dir: Path, out_dir: Path) -> list[Path]:
    """Per setup (``_setup``) and schedule — the flows' meta-epochs and DevNet/DRA's epochs apart: curves
    over every seed; for the first seed, log-likelihood histograms and map panels. One-pass methods
    (PaDiM, PatchCore) are reference lines in every curve of their setup and have their maps drawn once.
    Records of other setups are never drawn together."""
    written: list[Path] = []
    groups: dict[tuple, list[dict]] = {}
    for rec in records:
        groups.setdefault((*_setup(rec), _schedule(rec)), []).append(rec)
    for key, recs in sorted(groups.items(), key=str):
        *setup, schedule = key
        schedules = sorted(  # the flows' first: one-pass methods' maps are drawn with them
            (k[-1] for k in groups if list(k[:-1]) == setup and k[-1] is not None),
            key=lambda sched: (sched[0] != "meta_epochs", str(sched)),
        )
        if schedule is None and schedules:
            continue  # one-pass methods are drawn with the trained methods of their setup
        one_pass = groups.get((*setup, None), []) if schedule is not None else []
        maps_of_one_pass = bool(schedules) and schedule == schedules[0]
        written += _setup_figures(setup, schedule, recs, one_pass, maps_of_one_pass, cells_dir, out_dir)
    return written


def _setup_figures(
    setup: list,
    schedule: tuple[str, int] | None,
    recs: list[dict],
    one_pass: list[dict],
    maps_of_one_pass: bool,
    cells_dir: Path,
    out_dir: Path,
) -> list[Path]:
    """Curves, log-likelihood histograms and map panels of one setup and schedule."""
    dataset, category, profile, size, known = setup
    word, tag = ROUND_NAMES[schedule[0]] if schedule else ("", "")
    words = f"{word}s" if word else ""
    setup_text = f"{profile}, {size}², {known}" + (f", {schedule[1]} {words}" if schedule else "")
    stem = f"{dataset}-{category}-{profile}-{size}-{known}" + (f"-{tag}{schedule[1]}" if schedule else "")
    written = metric_curves(
        recs + one_pass,
        f"{dataset}/{category}: metrics per evaluated {words[:-1] or 'epoch'} ({setup_text})",
        out_dir / f"curves-{stem}",
        x_label=words[:-1] or "epoch",
    )
    seed = min(r["config"]["seed"] for r in recs)
    drawn = recs + (one_pass if maps_of_one_pass else [])
    first = {
        r["config"]["method"]: (cells_dir / r["cell_id"], r) for r in drawn if r["config"]["seed"] == seed
    }
    pair = {m: first[m] for m in ("nfad", "bgad") if m in first} or first
    written += loglik_histograms(
        pair,
        f"{dataset}/{category} ({setup_text}), seed {seed}: test ℓ, normal vs anomalous",
        out_dir / f"loglik-{stem}",
    )
    for method, (folder, _) in sorted(first.items()):
        written += map_panels(
            folder,
            f"{dataset}/{category} · {method} · seed {seed} ({setup_text})",
            out_dir / f"maps-{stem}-{method}",
        )
    return written
