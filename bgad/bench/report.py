"""Paper-layout tables from the result store, with the published numbers and our difference beside them.

Reports read records only (never train or score). A record belongs to a protocol when its resolved
settings match the protocol's (dataset, category, method, settings, variant, grid, subsets), so a
cell shared by two tables shows up in both. Per cell of a table: mean ± std over seeds, a 95 %
t-interval, the published value and our difference; a cell whose interval excludes the published
value is flagged. Missing cells show as missing, never as zero.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import re
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from bgad.bench.method_registry import METHODS
from bgad.bench.protocols import Protocol, Variant, defect_subsets
from bgad.bench.published import published_value
from bgad.bench.store import ResultStore, metric_value
from bgad.fileio import atomic_write_text, atomic_write_with, check_writable_folder
from bgad.metrics import DIVERGED_LOSS, FLAG_TEXT, METRIC_LABELS, TIE_SPREAD

log = logging.getLogger(__name__)

# Our method names where the paper's tables name the same thing differently.
PAPER_METHOD_NAMES = {"bgad_cc": "bgad_dagger"}
REFERENCE_METHODS = {n for n in METHODS.names() if METHODS.get(n).reference}  # baselines we add
MEAN_ROW = "mean"


def _label(value: object) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def match_records(protocol: Protocol, records: list[dict]) -> pd.DataFrame:
    """One row per record that belongs to ``protocol``, with its column label and metric values."""
    subsets = defect_subsets() if protocol.subsets else {}
    rows = []
    for rec in records:
        cfg = rec["config"]
        dataset, category, method = cfg["dataset"], cfg["category"], cfg["method"]
        variant = _variant_of(protocol, cfg, subsets)
        if variant is None:
            continue
        parts = [variant.name] if len(protocol.variants) > 1 else []
        parts += [f"{k}={_label(cfg[k])}" for k in protocol.grid if cfg.get(k) is not None]
        off_profile = _off_profile(protocol, variant, cfg)
        parts += off_profile
        row = {
            "dataset": dataset,
            "category": category,
            "defect_type": cfg.get("anomaly_defect_type") or "",
            "method": method,
            "column": " ".join(parts),
            "off_profile": " ".join(off_profile),  # settings that differ from the profile's, or ""
            "variant": variant.name,
            "seed": cfg["seed"],
            "profile": cfg["profile"],
            "backbone": cfg["backbone"],
            "input_size": cfg["input_size"],
            "cell_id": rec["cell_id"],
            "settings": {k: cfg.get(k) for k in ("n_known_anomalies", "beta", "tau", "racp", "focal")},
        }
        for name in METRIC_LABELS:
            for selection in ("last", "best"):
                row[f"{name}|{selection}"], row[f"{name}|{selection}|flag"] = metric_value(
                    rec, name, selection
                )
        rows.append(row)
    return pd.DataFrame(rows)


def _variant_of(protocol: Protocol, cfg: dict, subsets: dict) -> Variant | None:
    """The protocol's variant a record's settings belong to, or None when they belong to none."""
    dataset, category, method = cfg["dataset"], cfg["category"], cfg["method"]
    if dataset not in protocol.datasets or method not in protocol.methods:
        return None
    allowed = protocol.datasets[dataset]
    if allowed is not None and category not in allowed:
        return None
    # a grid axis the method does not have (None in its record: PaDiM has no schedule) keeps it
    if any(cfg.get(k) is not None and cfg.get(k) not in values for k, values in protocol.grid.items()):
        return None
    if protocol.expand == "defect_types" and not cfg.get("anomaly_defect_type"):
        return None
    if protocol.subsets and not _subsets_match(protocol, cfg, subsets.get(category)):
        return None
    for variant in protocol.variants:
        if variant.methods is not None and method not in variant.methods:
            continue
        required = {**protocol.settings, **variant.settings}
        # a setting the method does not have (e.g. a flow schedule for PaDiM) does not exclude it
        if all(cfg.get(k, v) == v for k, v in required.items()):
            return variant
    return None


# Settings that say which cell it is or how it ran, not what it computed.
_IDENTITY = frozenset(
    {
        "seed", "dataset", "category", "method", "profile", "data_root", "device", "threads",
        "feature_cache", "save_model", "backbone_weights", "loglik_samples", "map_samples",
        "malloc_tuning", "anomaly_defect_type", "train_types", "test_types",
    }
)  # fmt: skip


def _off_profile(protocol: Protocol, variant: Variant, cfg: dict) -> list[str]:
    """``name=value`` for each setting where a record differs from what its profile and the protocol
    give (e.g. a longer schedule run with ``--set``): such a record gets a column of its own, never
    averaged with the profile's cells."""
    grid = {k: cfg.get(k) for k in protocol.grid if cfg.get(k) is not None}
    layer = json.dumps({**protocol.settings, **variant.settings, **grid}, sort_keys=True, default=str)
    try:
        expected = _expected_settings(cfg["profile"], layer, cfg["method"], cfg["dataset"], cfg["category"])
    except Exception:  # noqa: BLE001 - a profile or method this version no longer has: no label
        return []
    return [
        f"{k}={_label(v)}"
        for k, v in sorted(cfg.items())
        if k in expected
        and k not in _IDENTITY
        and k not in protocol.grid
        and v is not None
        and v != expected[k]
    ]


@functools.lru_cache(maxsize=256)
def _expected_settings(profile: str, layer: str, method: str, dataset: str, category: str) -> dict:
    from bgad.bench.config import resolve_config

    plan = {"method": method, "dataset": dataset, "category": category}
    return resolve_config(profile, {}, [("protocol", json.loads(layer)), ("plan", plan)]).to_dict()


def _subsets_match(protocol: Protocol, cfg: dict, subsets: dict | None) -> bool:
    if subsets is None:
        return False
    for key, which in (
        ("train_types", protocol.subsets.get("train", "all")),
        ("test_types", protocol.subsets.get("test", "all")),
    ):
        expected = None if which == "all" else ",".join(subsets[which])
        if cfg.get(key) != expected:
            return False
    return True


def interval(values: np.ndarray) -> tuple[float, float, float, float]:
    """(mean, std, CI low, CI high) over seeds; a 95 % t-interval needs at least two seeds."""
    values = np.asarray(values, dtype=float)
    mean = float(values.mean())
    if len(values) < 2:
        return mean, 0.0, math.nan, math.nan
    std = float(values.std(ddof=1))
    half = float(stats.t.ppf(0.975, len(values) - 1) * std / math.sqrt(len(values)))
    return mean, std, mean - half, mean + half


def summarize(protocol: Protocol, matched: pd.DataFrame, selection: str = "last") -> pd.DataFrame:
    """Mean ± std over seeds per table cell, a category mean row per dataset, published values joined."""
    if matched.empty:
        return pd.DataFrame()
    out = []
    keys = ["dataset", "profile", "column", "method"]  # never averaged across profiles
    for (dataset, _profile, column, method), group in matched.groupby(keys, sort=True):
        settings = group["settings"].iloc[0]
        variant = group["variant"].iloc[0]
        for metric in protocol.metrics:
            col = f"{metric}|{selection}"
            if group[col].isna().all() and group[f"{col}|flag"].isna().all():
                continue
            per_seed, flagged = _per_seed(group, col)
            rows = [(cat, dt, per_seed.loc[(cat, dt)].dropna().to_numpy()) for cat, dt in per_seed.index]
            if protocol.expand == "defect_types":  # each category's mean over its defect types, per seed
                for cat in sorted({c for c, _ in per_seed.index}):
                    sub = per_seed.loc[cat]
                    complete = sub.dropna(axis=1)
                    rows.append((cat, MEAN_ROW, complete.mean(axis=0).to_numpy()))
            by_category = (
                per_seed.groupby(level="category").mean() if protocol.expand else per_seed.droplevel(1)
            )
            complete_seeds = by_category.dropna(axis=1)
            if len(by_category) > 1 and complete_seeds.shape[1]:
                rows.append((MEAN_ROW, "", complete_seeds.mean(axis=0).to_numpy()))
            for cat, dtype, values in rows:
                flags = flagged.get((cat, dtype), [])
                if len(values) == 0 and not flags:
                    continue
                mean, std, low, high = interval(values) if len(values) else (math.nan,) * 4
                ref = _published(protocol, variant, method, dataset, cat, dtype, metric, settings)
                pub, pm = ref if ref else (math.nan, math.nan)
                out.append(
                    {
                        "dataset": dataset,
                        "category": cat,
                        "defect_type": dtype,
                        "column": column,
                        "method": method,
                        "metric": metric,
                        "selection": selection,
                        "n_seeds": len(values),
                        "n_flagged": len(flags),  # seeds left out: their value is flagged
                        "flagged_as": "/".join(sorted(set(flags))),  # e.g. "diverged", "tied", or ""
                        "mean": mean,
                        "std": std,
                        "ci_low": low,
                        "ci_high": high,
                        "published": pub,
                        "published_pm": math.nan if pm is None else pm,
                        "diff": mean - pub,
                        "flag": bool(
                            not math.isnan(low) and not math.isnan(pub) and not (low <= pub <= high)
                        ),
                        "profiles": ",".join(sorted(set(group["profile"]))),
                        "backbones": ",".join(sorted(set(group["backbone"]))),
                    }
                )
    return pd.DataFrame(out)


def _per_seed(group: pd.DataFrame, col: str) -> tuple[pd.DataFrame, dict[tuple[str, str], list[str]]]:
    """(category, defect type) × seed values of one metric, and each row's flags (diverged, tied).

    A flagged value stays in its place as NaN: it is left out of the row's mean, and its seed out of
    the category mean rows (complete seeds only), where a dropped cell would shrink the mean's categories.
    """
    kept = group[group[col].notna() | group[f"{col}|flag"].notna()]
    keys = ["category", "defect_type"]
    per_seed = kept.groupby([*keys, "seed"])[col].first().astype(float).unstack("seed")
    flagged = kept[kept[f"{col}|flag"].notna()].groupby(keys)[f"{col}|flag"]
    return per_seed, {key: sorted(flags) for key, flags in flagged}


def _published(
    protocol: Protocol,
    variant: str,
    method: str,
    dataset: str,
    category: str,
    defect_type: str,
    metric: str,
    settings: dict,
) -> tuple[float, float | None] | None:
    fields = {**settings, "type": defect_type or MEAN_ROW}
    if isinstance(fields.get("racp"), bool):
        fields["racp"], fields["focal"] = int(fields["racp"]), int(fields["focal"])
    for ref in protocol.published:
        if ref.variant is not None and ref.variant != variant:
            continue
        try:
            setting = ref.setting.format(**fields)
        except (KeyError, ValueError):
            continue
        found = published_value(
            PAPER_METHOD_NAMES.get(method, method),
            dataset,
            category,
            metric,
            setting,
            source=ref.source,
            table=ref.table,
        )
        if found is not None:
            return found
    return None


def paired_test(matched: pd.DataFrame, metric: str, a: str, b: str, selection: str = "last") -> dict | None:
    """Wilcoxon signed-rank test of method ``a`` vs ``b`` over paired (category, defect type, seed, column) cells."""
    col = f"{metric}|{selection}"
    keys = ["dataset", "category", "defect_type", "seed", "column"]
    left = matched[matched["method"] == a].set_index(keys)[col]
    right = matched[matched["method"] == b].set_index(keys)[col]
    both = pd.concat([left.rename("a"), right.rename("b")], axis=1, join="inner").dropna()
    if len(both) < 2:
        return None
    diff = both["a"] - both["b"]
    if np.allclose(diff, 0):
        return {"n": len(both), "median_diff": 0.0, "p_value": 1.0}
    result = stats.wilcoxon(both["a"], both["b"])
    return {"n": len(both), "median_diff": float(diff.median()), "p_value": float(result.pvalue)}


# --- the paper's own table ------------------------------------------------------------------------


def paper_table(protocol: Protocol) -> pd.DataFrame:
    """The printed rows of the protocol's table(s): method, row key, metric, value, ±, in print order.

    The row key is (dataset, category, defect type); a one-class table prints one row per known
    type (``type=<t>`` in its setting), the others one per category.
    """
    from bgad.bench.published import load_published

    frames = []
    df = load_published()
    for ref in protocol.published:
        part = df[(df["source"] == ref.source) & (df["table"] == ref.table)].copy()
        types = part["setting"].str.extract(r"type=(\S+)")[0].fillna("")
        part["defect_type"] = types.where(types != MEAN_ROW, MEAN_ROW)
        frames.append(part)
    if not frames:
        return pd.DataFrame()
    out = pd.concat(frames, ignore_index=True)
    return out[out["metric"].isin(protocol.metrics)].drop_duplicates(
        ["method", "dataset", "category", "defect_type", "metric", "column"]
    )


def published_columns(protocol: Protocol, ours: set[str]) -> pd.DataFrame:
    """The paper's other methods (not run here) as summary rows: columns of published numbers beside ours."""
    table = paper_table(protocol)
    if table.empty:
        return table
    ours_in_paper = {PAPER_METHOD_NAMES.get(m, m) for m in ours}
    others = table[~table["method"].isin(ours_in_paper)]
    rows = [
        {
            "dataset": r.dataset,
            "category": r.category,
            "defect_type": r.defect_type if protocol.expand else "",
            "column": f"{r.column} [published]",
            "method": f"published:{r.method}",
            "metric": r.metric,
            "mean": float(r.value),
            "std": float(r.pm) if not math.isnan(r.pm) else math.nan,
            "n_seeds": 0,
            "published": math.nan,
            "diff": math.nan,
            "flag": False,
        }
        for r in others.itertuples()
    ]
    return pd.DataFrame(rows)


def paper_rows(protocol: Protocol, metric: str | None = None) -> list[Row]:
    """The paper's rows in print order (rows we have not run are shown too, never dropped)."""
    table = paper_table(protocol)
    if not table.empty and metric is not None:
        table = table[table["metric"] == metric]
    if table.empty:
        return []
    keys = zip(
        table["dataset"],
        table["category"],
        table["defect_type"] if protocol.expand else [""] * len(table),
        strict=True,
    )
    return list(dict.fromkeys(keys))


# --- rendering ------------------------------------------------------------------------------------


Row = tuple[str, str, str]  # (dataset, category, defect type)
Column = tuple[str, str]  # (method, column label)


@dataclass(frozen=True)
class TableLayout:
    """Row keys and column keys of one rendered table (one per profile × metric × epoch selection)."""

    rows: list[Row]
    columns: list[Column]


def _layout(protocol: Protocol, summary: pd.DataFrame, metric: str) -> TableLayout:
    """Rows: the paper's in print order, then ours it does not print; columns: see ``_column_order``."""

    def row_key(r: Row) -> tuple:
        dataset, cat, dt = r
        return (dataset, cat == MEAN_ROW, cat, dt == MEAN_ROW, dt)

    ours = sorted({(r.dataset, r.category, r.defect_type) for r in summary.itertuples()}, key=row_key)
    rows = list(dict.fromkeys([*paper_rows(protocol, metric), *ours]))
    columns = sorted({(r.method, r.column) for r in summary.itertuples()}, key=_column_order(protocol))
    return TableLayout(rows, columns)


def _column_order(protocol: Protocol) -> Callable[[Column], tuple]:
    """Sort key of a column, so a table reads like the paper's: the methods the paper prints in its
    column order (ours, e.g. BGAD, where the paper prints it), then our other methods (NFAD), then the
    reference baselines we add; one method's columns in the protocol's variant order, then by grid value."""
    table = paper_table(protocol)
    printed = list(dict.fromkeys(table["method"])) if not table.empty else []
    methods = list(protocol.methods)
    variants = [v.name for v in protocol.variants]

    def key(column: Column) -> tuple:
        method, label = column
        name = method.removeprefix("published:")
        if PAPER_METHOD_NAMES.get(name, name) in printed:
            rank = (0, printed.index(PAPER_METHOD_NAMES.get(name, name)))
        else:
            rank = (
                2 if method in REFERENCE_METHODS else 1,
                methods.index(name) if name in methods else len(methods),
            )
        named = [v for v in variants if label == v or label.startswith(f"{v} ")]
        variant = max(named, key=len) if named else ""
        rest = label.removeprefix(variant)
        return (*rank, name, variants.index(variant) if variant else -1, _natural(rest))

    return key


def _natural(text: str) -> tuple:
    """``meta_epochs=8`` before ``meta_epochs=16``: numbers in a label compare as numbers."""
    parts = re.split(r"(\d+(?:\.\d+)?)", text)
    return tuple(float(p) if i % 2 else p for i, p in enumerate(parts))


def _row_label(row: Row) -> str:
    dataset, category, _ = row
    return category if category == dataset else f"{dataset}/{category}"


def _column_title(method: str, column: str) -> str:
    if method.startswith("published:"):
        return column  # the paper's own column name, marked [published]
    ref = " (ref.)" if method in REFERENCE_METHODS else ""
    return f"{method}{ref}" + (f" {column}" if column else "")


def _cell_text(cell: pd.Series | None, latex: bool = False) -> str:
    if cell is None:
        return "--" if latex else "—"
    pm = "$\\pm$" if latex else "±"
    flagged = cell.get("n_flagged", 0)  # NaN in a published row
    if flagged > 0 and cell["n_seeds"] == 0:  # every seed flagged: the reason, never a number
        return _flag_text(cell, latex)
    if cell["n_seeds"] == 0:  # a published number: with the paper's ± where it printed one
        return f"{cell['mean']:.3f}" + (f" {pm} {cell['std']:.3f}" if not math.isnan(cell["std"]) else "")
    text = f"{cell['mean']:.3f} {pm} {cell['std']:.3f}" if cell["n_seeds"] > 1 else f"{cell['mean']:.3f}"
    if not math.isnan(cell["published"]):
        sign = "+" if cell["diff"] >= 0 else ("-" if latex else "−")
        paper_pm = cell.get("published_pm", math.nan)
        printed = f"{cell['published']:.3f}" + (f" {pm} {paper_pm:.3f}" if paper_pm == paper_pm else "")
        text += f" (paper {printed}, {sign}{abs(cell['diff']):.3f})"
        if cell["flag"]:
            text += " \\textdagger" if latex else " ⚑"
    if flagged > 0:
        text += f" [{int(flagged)} seed(s) {cell['flagged_as']}, left out]"
    return text


def _flag_text(cell: pd.Series, latex: bool) -> str:
    """A cell whose every seed is flagged: ``diverged``, ``tied (—)``, with the count of seeds."""
    text = " / ".join(FLAG_TEXT[f] for f in cell["flagged_as"].split("/"))
    if cell["n_flagged"] > 1:
        text += f" ({int(cell['n_flagged'])} seeds)"
    return text.replace("—", "---") if latex else text


def _table_rows(part: pd.DataFrame, layout: TableLayout, latex: bool) -> list[list[str]]:
    """Cell texts per row, the best mean of each row in bold (only when there is a choice)."""
    cells = {
        (r["dataset"], r["category"], r["defect_type"], r["method"], r["column"]): r
        for _, r in part.iterrows()
    }
    out = []
    for row in layout.rows:
        present = [
            cells[(*row, *col)]["mean"]
            for col in layout.columns
            if (*row, *col) in cells and cells[(*row, *col)]["n_seeds"] > 0
        ]
        top = max(present) if present else math.nan
        texts = []
        for col in layout.columns:
            cell = cells.get((*row, *col))
            text = _cell_text(cell, latex)
            ours = cell is not None and cell["n_seeds"] > 0
            if ours and len(present) > 1 and math.isclose(cell["mean"], top, abs_tol=5e-4):
                text = f"\\textbf{{{text}}}" if latex else f"**{text}**"
            texts.append(text)
        out.append(texts)
    return out


def _profile_rank(profile: str) -> tuple:
    return (profile != "paper", profile)  # the paper's setting first


def _tables(summary: pd.DataFrame) -> Iterator[tuple[str, str, str, pd.DataFrame]]:
    """(profile, metric, selection, cells) of each rendered table: one per profile × metric × epoch
    selection, so numbers of two settings never share a table; the paper's other methods in each."""
    published = summary["method"].str.startswith("published:")
    ours = summary[~published]
    for profile in sorted(set(ours["profiles"]), key=_profile_rank):
        mine = ours[ours["profiles"] == profile]
        for (metric, selection), part in mine.groupby(["metric", "selection"], sort=False):
            others = summary[published & (summary["metric"] == metric) & (summary["selection"] == selection)]
            yield profile, metric, selection, pd.concat([part, others], ignore_index=True)


def _table_title(profile: str, metric: str, selection: str) -> str:
    return f"Profile {profile}: {METRIC_LABELS[metric]}, {_selection_title(selection)}"


def _selection_title(selection: str) -> str:
    return (
        "last epoch"
        if selection == "last"
        else "best epoch per metric (paper-compatible, chosen on the test set)"
    )


def _paired_test_lines(matched: pd.DataFrame, metric: str, selection: str) -> list[str]:
    """BGAD vs NFAD, one test per column of one profile's records (a grid point, an off-profile
    setting): pairs never cross columns, and a column's test never pools cells of another setting."""
    lines = []
    columns = sorted(set(matched["column"]), key=_natural)
    for column in columns:
        test = paired_test(matched[matched["column"] == column], metric, "bgad", "nfad", selection)
        if test:
            where = f" ({column})" if len(columns) > 1 and column else ""
            lines += [
                f"Paired Wilcoxon test{where}, bgad vs nfad over {test['n']} (dataset, category, seed) pairs: "
                f"median difference {test['median_diff']:+.4f}, p = {test['p_value']:.3g}.",
                "",
            ]
    return lines


def render_markdown(
    protocol: Protocol, summary: pd.DataFrame, matched: pd.DataFrame, left_out: str = ""
) -> str:
    """The protocol's tables, one per profile × metric × epoch selection; ``left_out`` says which
    records of the protocol are not in them and where they are."""
    lines = [f"# {protocol.name}", "", protocol.description, "", f"Source: {protocol.source}", ""]
    if summary.empty:
        return "\n".join([*lines, "_No results in the store for this protocol yet._", ""])
    lines += _provenance_lines(matched) + ([left_out, ""] if left_out else [])
    for profile, metric, selection, part in _tables(summary):
        layout = _layout(protocol, part, metric)
        lines += [f"## {_table_title(profile, metric, selection)}", ""]
        header = [
            "dataset/category",
            *(["defect type"] if protocol.expand else []),
            *(_column_title(m, c) for m, c in layout.columns),
        ]
        lines += ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
        for row, texts in zip(layout.rows, _table_rows(part, layout, latex=False), strict=True):
            lead = [_row_label(row), *([row[2] or "—"] if protocol.expand else [])]
            lines.append("| " + " | ".join(lead + texts) + " |")
        lines.append("")
        if {"bgad", "nfad"} <= set(part["method"]):
            lines += _paired_test_lines(matched[matched["profile"] == profile], metric, selection)
    if summary.get("n_flagged", pd.Series(dtype=float)).gt(0).any():
        lines += [FLAGGED_NOTE, ""]
    lines += [
        "Cells: mean ± std over seeds (a single seed shows its value). In brackets: the published value (with the "
        "paper's ± where it printed one) and our difference; ⚑ marks a cell whose 95 % interval over seeds excludes "
        "the published value. Bold: our best in the row. (ref.) marks reference baselines we add. Columns marked "
        "[published] are the paper's numbers for methods not run here, copied from "
        f"{'; '.join(f'{r.source} {r.table}' for r in protocol.published) or 'the paper'} "
        "(protocols/published/). — marks a row the paper prints that has not been run here (or a cell without a value).",
        "",
    ]
    return "\n".join(lines)


FLAGGED_NOTE = (
    f"`diverged`: the mean training loss exceeded {DIVERGED_LOSS:g} (or was not finite), so every metric of that "
    f"evaluation is meaningless; `tied (—)`: the scores were equal to within {TIE_SPREAD:g} of their size, so the "
    "metric is undefined. Such a value is never averaged: a cell shows the mean of its other seeds and how many "
    "were left out."
)


def _provenance_lines(matched: pd.DataFrame) -> list[str]:
    setups = matched.groupby(["profile", "backbone", "input_size"]).size()
    lines = ["Produced by:"]
    for (profile, backbone, size), n in setups.items():
        note = (
            ""
            if profile == "paper"
            else " — not the paper's setting: compare with the published values for direction, not level"
        )
        lines.append(f"- {n} cell(s) with profile `{profile}`, backbone `{backbone}`, input {size}²{note}")
    return [*lines, ""]


_LATEX_ESCAPES = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
}


def latex_escape(text: str) -> str:
    return "".join(_LATEX_ESCAPES.get(ch, ch) for ch in text)


def render_latex(protocol: Protocol, summary: pd.DataFrame) -> str:
    """One booktabs table per profile × metric × epoch selection."""
    if summary.empty:
        return f"% {latex_escape(protocol.name)}: no results yet\n"
    blocks = [f"% {latex_escape(protocol.name)}: generated by bgad-bench report; do not edit by hand"]
    for profile, metric, selection, part in _tables(summary):
        layout = _layout(protocol, part, metric)
        spec = "l" * (2 if protocol.expand else 1) + "c" * len(layout.columns)
        header = [
            "Dataset/category",
            *(["Defect type"] if protocol.expand else []),
            *(_column_title(m, c) for m, c in layout.columns),
        ]
        caption = f"{protocol.name}: {_table_title(profile, metric, selection)}"
        body = []
        for row, texts in zip(layout.rows, _table_rows(part, layout, latex=True), strict=True):
            lead = [
                latex_escape(_row_label(row)),
                *([latex_escape(row[2] or "--")] if protocol.expand else []),
            ]
            body.append(" & ".join(lead + texts) + r" \\")
        blocks += [
            r"\begin{table}[t]",
            r"\centering",
            rf"\caption{{{latex_escape(caption)}}}",
            rf"\begin{{tabular}}{{{spec}}}",
            r"\toprule",
            " & ".join(latex_escape(h) for h in header) + r" \\",
            r"\midrule",
            *body,
            r"\bottomrule",
            r"\end{tabular}",
            r"\end{table}",
            "",
        ]
    return "\n".join(blocks)


@dataclass(frozen=True)
class TableRecords:
    """The records one table shows, and those of its protocol it leaves out because they ran off their
    profile's settings (a ``--set`` schedule, another input size), with the tables that show those."""

    protocol: Protocol
    shown: pd.DataFrame  # rows of ``match_records``
    left_out: pd.DataFrame  # rows of ``match_records`` with an ``off_profile`` label
    elsewhere: dict[str, int]  # table name -> how many of the left-out records it shows

    def left_out_note(self) -> str:
        """One sentence for the table and the index: how many records are left out and where they are."""
        if self.left_out.empty:
            return ""
        values: dict[str, set[str]] = {}
        for setting in {s for label in self.left_out["off_profile"] for s in label.split()}:
            name, value = setting.split("=", 1)
            values.setdefault(name, set()).add(value)
        labels = [f"{k}={'/'.join(sorted(v, key=_natural))}" for k, v in sorted(values.items())]
        where = ", ".join(f"{name}.md ({n})" for name, n in sorted(self.elsewhere.items()))
        return (
            f"{self.left_out['cell_id'].nunique()} record(s) run off their profile's settings "
            f"({', '.join(labels)}) are not in these tables"
            + (f"; they are in {where}" if where else "")
            + "."
        )


def assign_records(protocols: list[Protocol], records: list[dict]) -> list[TableRecords]:
    """The tables to write: each protocol's with the records at their profile's settings, then one of
    the records no protocol shows (ad-hoc runs, schedules set by hand). A record off its profile's
    settings is shown only where those settings are the table's own (the scale study's grid) or in
    the ad-hoc table, so every table compares one setting per profile, as the paper's do."""
    parts = []
    for protocol in protocols:
        matched = match_records(protocol, records)
        if not matched.empty:
            off = matched["off_profile"] != ""
            parts.append((protocol, matched[~off], matched[off]))
    claimed = {cell for _, shown, _ in parts for cell in shown["cell_id"]}
    rest = [r for r in records if r["cell_id"] not in claimed]
    if rest:
        adhoc = _adhoc_for(rest)
        parts.append((adhoc, match_records(adhoc, rest), pd.DataFrame(columns=["cell_id", "off_profile"])))
    homes: dict[str, list[str]] = {}
    for protocol, shown, _ in parts:
        for cell in set(shown["cell_id"]):
            homes.setdefault(cell, []).append(protocol.name)
    return [
        TableRecords(
            protocol,
            shown,
            off,
            dict(Counter(t for cell in set(off["cell_id"]) for t in homes.get(cell, []))),
        )
        for protocol, shown, off in parts
        if not shown.empty
    ]


def write_report(protocols: list[Protocol], records: list[dict], out_dir: Path) -> list[Path]:
    """Markdown, LaTeX and CSV per protocol that has results (last and best-epoch selections)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for table in assign_records(protocols, records):
        protocol, matched = table.protocol, table.shown
        published = published_columns(protocol, set(matched["method"]))
        summary = pd.concat(
            [summarize(protocol, matched, sel) for sel in ("last", "best")]
            + [published.assign(selection=sel) for sel in ("last", "best") if not published.empty],
            ignore_index=True,
        )
        for suffix, text in (
            (".md", render_markdown(protocol, summary, matched, table.left_out_note())),
            (".tex", render_latex(protocol, summary)),
        ):
            written.append(_write_text(out_dir / f"{protocol.name}{suffix}", text))
        csv_path = out_dir / f"{protocol.name}.csv"
        atomic_write_with(csv_path, lambda tmp, frame=summary: frame.to_csv(tmp, index=False))
        written.append(csv_path)
    return written


def _adhoc_for(records: list[dict]) -> Protocol:
    """The ad-hoc protocol covering ``records``: one row per dataset/category, a column per method."""
    from dataclasses import replace

    from bgad.bench.protocols import adhoc_protocol

    datasets = {r["config"]["dataset"]: None for r in records}
    methods = tuple(sorted({r["config"]["method"] for r in records}))
    return replace(
        adhoc_protocol(next(iter(datasets))),
        datasets=datasets,
        methods=methods,
        description=("Records that belong to no paper protocol (ad-hoc runs), mean ± std over seeds"),
    )


def _write_text(path: Path, text: str) -> Path:
    atomic_write_text(path, text)
    return path


def record_problems(store, records: list[dict]) -> list[str]:  # noqa: ANN001
    """Records that cannot be read, and records without a metric they should have (named)."""
    from bgad.metrics import METRIC_SPECS

    problems = [f"skipped unreadable record {name}: {why}" for name, why in store.bad.items()]
    for rec in records:
        masks = rec.get("dataset", {}).get("has_pixel_masks", True)
        for name, spec in METRIC_SPECS.items():
            if name == "pro_paper" or (spec.needs_pixel_masks and not masks):
                continue  # pro_paper is undefined by design on some maps (each epoch says so)
            value, flag = metric_value(rec, name, "last")
            if flag:
                problems.append(
                    f"record {rec['cell_id']} has its {spec.label} flagged {flag}: left out of means"
                )
            elif value is None or value != value:
                problems.append(
                    f"record {rec['cell_id']} has no {spec.label}: its cells in the tables stay empty"
                )
    return problems


def open_store(results: Path) -> ResultStore:
    """The result store at ``results`` (``--results``), or a ``ConfigError`` that says what is there
    instead (nothing, a file, one cell's folder, the cells folder itself) and what to pass."""
    from bgad.bench.config import ConfigError

    store = ResultStore(results)
    if store.cells_dir.is_dir():
        return store
    if not results.exists():
        why = "does not exist (run `bgad-bench run ...` first)"
    elif not results.is_dir():
        why = "is a file, not a result store"
    elif (results / "result.json").is_file():
        why = f"is one cell's folder, not a result store (the store holding it: {results.parent.parent})"
    elif any(results.glob("*/result.json")):
        why = f"is a store's cells/ folder (the store: {results.parent})"
    else:
        why = "is not a result store: it has no cells/ folder"
    raise ConfigError(
        f"--results {results} {why}; pass the folder that holds cells/<cell id>/result.json with --results DIR"
    )


def render_reports(
    results: Path,
    out: Path,
    protocols: list[str] | None = None,
    figures: bool = True,
    warn: Callable[[str], None] | None = None,
) -> list[Path]:
    """Every protocol's tables (and the figures) from the store at ``results`` into ``out``.

    Unreadable records are skipped and records missing a metric are named, through ``warn``.
    """
    from bgad.bench.config import ConfigError
    from bgad.bench.figures import write_figures
    from bgad.bench.protocols import load_protocol, protocol_names

    chosen = [load_protocol(p) for p in (protocols or protocol_names())]
    store = open_store(results)
    records = list(store.records())
    for problem in record_problems(store, records):
        (warn or log.warning)(problem)
    if not records:
        raise ConfigError(
            f"no results in {store.cells_dir}; run `bgad-bench run ...` first, or pass --results DIR"
        )
    check_writable_folder(out, "give a writable folder for the reports with --out DIR")
    written = write_report(chosen, records, out)
    if figures:
        written += write_figures(records, store.cells_dir, out / "figures")
    written.append(write_index(out, written, chosen, records))
    return written


FIGURE_KINDS = {
    "curves": "metrics after every meta-epoch, mean over seeds (band: min–max); one-pass methods as lines",
    "loglik": "test log-likelihoods per level, normal vs anomalous, NFAD vs BGAD (BGAD's boundaries drawn)",
    "maps": "test images, ground truth and anomaly maps: the top- and bottom-scored anomalies, the top normal",
}

GAP_TO_THE_PAPER = """## How to read the gap to the paper

Our committed numbers are CPU-scale runs, made to be compared with each other; the paper's were made
on a GPU with another setting. The gap has known causes, each one a setting:

- **Backbone.** The paper uses EfficientNet-B6 (ImageNet, AutoAugment weights); the CPU profiles use
  EfficientNet-Lite0 (fewer, weaker features), because its weights ship offline and it is ~10× cheaper.
- **Input size.** 256² in the paper, 128² here: a level-2 grid of 8×8 instead of 16×16 positions.
- **Schedule.** The paper trains 25 × 8 epochs with fibers of 4096; the `cpu` profile trains 4
  meta-epochs of at least 500 images with fibers of 256 and a standardising input layer for the flows
  (docs/flows.md); the `quick` profile is a smoke test whose flows are not trained.
- **Epoch selection.** The released code reports, per metric, the best epoch chosen on the test set.
  Our tables show the last epoch and, separately, that optimistic choice.
- **Seeds.** Three seeds (0, 42, 100); the paper's were not published.

A ⚑ says that our seeds' 95 % interval excludes the published value: at CPU scale that is expected
and measures the setting, not a defect. Read the direction (does BGAD beat NFAD, as the paper says?)
and the references run on the very same features (PaDiM, PatchCore).
"""


def write_index(out: Path, written: list[Path], protocols: list[Protocol], records: list[dict]) -> Path:
    """``README.md`` of the reports folder: every table and figure with one line on what it shows."""
    tables = {t.protocol.name: t for t in assign_records(protocols, records)}
    lines = [
        "# Reports",
        "",
        "Generated by `bgad-bench report` from the result store; never edited by hand. Each file holds "
        "one table per profile (and metric, epoch selection); records run off their profile's settings "
        "are left out of a protocol's tables and shown where those settings are the table's own.",
        "",
    ]
    lines += ["## Tables", "", "| file | what | profiles | left out |", "|---|---|---|---|"]
    for path in sorted(p for p in written if p.suffix == ".md" and p.parent == out):
        table = tables.get(path.stem)
        if table is None:  # not a table of these records
            continue
        profiles = ", ".join(sorted(set(table.shown["profile"]), key=_profile_rank))
        lines.append(
            f"| [{path.name}]({path.name}) (+ .tex, .csv) | {table.protocol.description} | {profiles} "
            f"| {table.left_out_note() or '—'} |"
        )
    # every figure in the folder (also those kept from an earlier run when this one skipped figures)
    figures = sorted({*(p for p in written if p.suffix == ".png"), *(out / "figures").glob("*.png")})
    if figures:
        lines += ["", "## Figures (PNG and PDF)", "", "| file | what |", "|---|---|"]
        for path in figures:
            kind = path.stem.split("-", 1)[0]
            lines.append(f"| [{path.name}](figures/{path.name}) | {FIGURE_KINDS.get(kind, '')} |")
    lines += ["", GAP_TO_THE_PAPER]
    index = out / "README.md"
    atomic_write_text(index, "\n".join(lines))
    return index
