"""Which records each table shows, and their statistics: matching, means over seeds, published values.

Reports read records only (never train or score). A record belongs to a protocol when its resolved
settings match the protocol's (dataset, category, method, settings, variant, grid, subsets), so a
cell shared by two tables shows up in both. Per cell of a table: mean ± std over seeds, a 95 %
t-interval, the published value and our difference; a cell whose interval excludes the published
value is flagged. Missing cells show as missing, never as zero.
"""

from __future__ import annotations

import functools
import json
import math
import re
import string
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from bgad.bench.config import AXES, RUN_SETTINGS, ConfigError, resolve_config
from bgad.bench.method_registry import METHODS
from bgad.bench.planner import subset_types
from bgad.bench.protocols import Protocol, PublishedRef, Variant, adhoc_protocol, defect_subsets
from bgad.bench.published import load_published, published_value
from bgad.bench.store import ResultStore, metric_value
from bgad.metrics import METRIC_LABELS, METRIC_SPECS

_SPECS = {name: METHODS.get(name) for name in METHODS.names()}
#: Our method names where the paper's tables name the same thing differently.
PAPER_METHOD_NAMES = {name: spec.published_as for name, spec in _SPECS.items() if spec.published_as}
PAPER_METHOD = "bgad"  # the method of the paper this suite reproduces
#: Competitors trained on the same known anomalies (DevNet, DRA). Their published numbers (their own
#: paper's, other papers' re-runs) stand in columns of their own beside our runs of them.
SUPERVISED_METHODS = frozenset(name for name, spec in _SPECS.items() if spec.supervised)
#: The pairs (a, b) the reports test a against b over paired cells: each method against the method it
#: is paired with (BGAD vs NFAD, its flows without the anomalies), then BGAD against each competitor.
PAIRED_METHODS: list[tuple[str, str]] = [
    *((name, spec.paired_with) for name, spec in _SPECS.items() if spec.paired_with),
    *((PAPER_METHOD, name) for name in sorted(SUPERVISED_METHODS)),
]
REFERENCE_METHODS = {name for name, spec in _SPECS.items() if spec.reference}  # baselines we add
#: How a column header names a published source other than the BGAD paper (its own are "[published]").
SOURCE_TITLES = {"dra-cvpr2022": "DRA paper", "ahl-cvpr2024": "AHL paper"}
PUBLISHED = "published:"  # prefix of a published column's method key: ``published:<source>:<method>``
MEAN_ROW = "mean"


def _label(value: object) -> str:
    """A setting's value in a column label, one word (a pair such as DRA's ``cutmix_area`` as ``0.02/0.15``)."""
    if isinstance(value, (list, tuple)):
        return "/".join(_label(v) for v in value)
    return f"{value:g}" if isinstance(value, float) else str(value)


def _as_read(value: object) -> object:
    """A value as a record's JSON gives it back (a tuple setting comes back a list)."""
    return json.loads(json.dumps(value, default=str))


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
        off_profile = _off_profile(protocol, variant, cfg, subsets)
        parts += off_profile
        row = {
            "dataset": dataset,
            "category": category,
            "defect_type": cfg.get(ROW_SETTING) or "",
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
    if protocol.expand == "defect_types" and not cfg.get(ROW_SETTING):
        return None
    listed = protocol.defect_types.get(category)
    if listed is not None and cfg.get(ROW_SETTING) not in listed:
        return None  # a type the protocol does not expand (AITEX's small types in DRA's hard setting)
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


#: The setting a table's rows are keyed by besides dataset and category (one-class tables: one row
#: per defect type of the known anomalies).
ROW_SETTING = "anomaly_defect_type"
# Settings that say which cell it is (the plan's axes, the row) or how it ran (the run settings, none
# of which changes a number): never a column of their own. Table 7's type subsets are compared with
# what the protocol gives (``_subset_settings``), like every other setting.
_IDENTITY = frozenset(AXES) | {ROW_SETTING} | RUN_SETTINGS


def _off_profile(protocol: Protocol, variant: Variant, cfg: dict, subsets: dict) -> list[str]:
    """``name=value`` for each setting where a record differs from what its profile and the protocol
    give (e.g. a longer schedule run with ``--set``): such a record gets a column of its own, never
    averaged with the profile's cells."""
    grid = {k: cfg.get(k) for k in protocol.grid if cfg.get(k) is not None}
    types = _subset_settings(protocol, subsets.get(cfg["category"])) if protocol.subsets else {}
    given = {**protocol.settings, **variant.settings, **grid, **types}
    layer = json.dumps(given, sort_keys=True, default=str)
    try:
        expected = _expected_settings(cfg["profile"], layer, cfg["method"], cfg["dataset"], cfg["category"])
    except Exception:  # a profile or method this version no longer has: no label
        return []
    return [
        f"{k}={_label(v)}"
        for k, v in sorted(cfg.items())
        if k in expected
        and k not in _IDENTITY
        and k not in protocol.grid
        and v is not None
        and _as_read(v) != _as_read(expected[k])
    ]


@functools.lru_cache(maxsize=256)
def _expected_settings(profile: str, layer: str, method: str, dataset: str, category: str) -> dict:
    plan = {"method": method, "dataset": dataset, "category": category}
    return resolve_config(profile, {}, [("protocol", json.loads(layer)), ("plan", plan)]).to_dict()


def _subsets_match(protocol: Protocol, cfg: dict, subsets: dict | None) -> bool:
    if subsets is None:
        return False
    return all(cfg.get(k) == v for k, v in _subset_settings(protocol, subsets).items())


def _subset_settings(protocol: Protocol, subsets: dict | None) -> dict[str, str | None]:
    """The type subsets (Table 7) a protocol gives a category: comma-joined types, None for all."""
    return {} if subsets is None else subset_types(protocol, subsets)


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
            for cat, dtype, values in _row_values(protocol, per_seed):
                flags = flagged.get((cat, dtype), [])
                if len(values) == 0 and not flags:
                    continue
                key = {"dataset": dataset, "category": cat, "defect_type": dtype, "column": column}
                key |= {"method": method, "metric": metric, "selection": selection}
                ref = _published(protocol, variant, method, dataset, cat, dtype, metric, settings)
                out.append(_summary_row(key, values, flags, ref, group))
    return pd.DataFrame(out)


def _row_values(protocol: Protocol, per_seed: pd.DataFrame) -> list[tuple[str, str, np.ndarray]]:
    """(category, defect type, values over seeds) of each row: the table's own rows, each category's
    mean over its defect types (one-class tables), then the mean over categories (complete seeds)."""
    rows = [(cat, dt, per_seed.loc[(cat, dt)].dropna().to_numpy()) for cat, dt in per_seed.index]
    if protocol.expand == "defect_types":  # each category's mean over its defect types, per seed
        for cat in sorted({c for c, _ in per_seed.index}):
            sub = per_seed.loc[cat]
            complete = sub.dropna(axis=1)
            rows.append((cat, MEAN_ROW, complete.mean(axis=0).to_numpy()))
    by_category = per_seed.groupby(level="category").mean() if protocol.expand else per_seed.droplevel(1)
    complete_seeds = by_category.dropna(axis=1)
    if len(by_category) > 1 and complete_seeds.shape[1]:
        rows.append((MEAN_ROW, "", complete_seeds.mean(axis=0).to_numpy()))
    return rows


def _summary_row(
    key: dict, values: np.ndarray, flags: list[str], ref: tuple | None, group: pd.DataFrame
) -> dict:
    """One summary row: ``key`` (where in which table), the statistics over seeds, the published value."""
    mean, std, low, high = interval(values) if len(values) else (math.nan,) * 4
    pub, pm = ref if ref else (math.nan, math.nan)
    return {
        **key,
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
        "flag": bool(not math.isnan(low) and not math.isnan(pub) and not (low <= pub <= high)),
        "profiles": ",".join(sorted(set(group["profile"]))),
        "backbones": ",".join(sorted(set(group["backbone"]))),
    }


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
    name = PAPER_METHOD_NAMES.get(method, method)
    for ref in protocol.published:
        if ref.variant is not None and ref.variant != variant:
            continue
        if ref.methods is not None and name not in ref.methods:
            continue
        try:
            setting = ref.setting.format(**fields)
        except (KeyError, ValueError):
            continue
        found = published_value(
            name,
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
    """Wilcoxon signed-rank test of method ``a`` vs ``b`` over paired (category, defect type, seed, column)
    cells; None without any pair, NaN statistics with a single one (too few to test)."""
    col = f"{metric}|{selection}"
    keys = ["dataset", "category", "defect_type", "seed", "column"]
    left = matched[matched["method"] == a].set_index(keys)[col]
    right = matched[matched["method"] == b].set_index(keys)[col]
    both = pd.concat([left.rename("a"), right.rename("b")], axis=1, join="inner").dropna()
    if both.empty:
        return None
    if len(both) < 2:
        return {"n": len(both), "median_diff": math.nan, "p_value": math.nan}
    diff = both["a"] - both["b"]
    if np.allclose(diff, 0):
        return {"n": len(both), "median_diff": 0.0, "p_value": 1.0}
    result = stats.wilcoxon(both["a"], both["b"])
    return {"n": len(both), "median_diff": float(diff.median()), "p_value": float(result.pvalue)}


# --- the paper's own table ------------------------------------------------------------------------


def paper_table(protocol: Protocol) -> pd.DataFrame:
    """The printed rows of the protocol's table(s) (the methods each reference cites), in print order:
    method, row key, metric, value, ±, the source and the protocol's variant each belongs to.

    The row key is (dataset, category, defect type); a one-class table prints one row per known
    type (``type=<t>`` in its setting), the others one per category.
    """
    frames = []
    df = load_published()
    for ref in protocol.published:
        part = df[(df["source"] == ref.source) & (df["table"] == ref.table)].copy()
        if ref.methods is not None:
            part = part[part["method"].isin(ref.methods)]
        types = part["setting"].str.extract(r"type=(\S+)")[0].fillna("")
        part["defect_type"] = types.where(types != MEAN_ROW, MEAN_ROW)
        part["variant"] = [
            _published_variant(protocol, ref, setting, method)
            for setting, method in zip(part["setting"], part["method"], strict=True)
        ]
        frames.append(part)
    if not frames:
        return pd.DataFrame()
    out = pd.concat(frames, ignore_index=True)
    return out[out["metric"].isin(protocol.metrics)].drop_duplicates(
        ["source", "method", "dataset", "category", "defect_type", "metric", "column", "setting"]
    )


def _published_variant(protocol: Protocol, ref: PublishedRef, setting: str, method: str) -> str:
    """The protocol's variant a printed number of ``method`` (its published name) belongs to: the
    reference's own, else the variant of that method whose settings give its printed setting (DRA's
    ten- and one-example columns), else none ("")."""
    if ref.variant is not None:
        return ref.variant
    for variant in protocol.variants:
        if variant.methods is not None and method not in {
            PAPER_METHOD_NAMES.get(m, m) for m in variant.methods
        }:
            continue
        pattern = _setting_pattern(ref.setting, {**protocol.settings, **variant.settings})
        if pattern is not None and pattern.fullmatch(setting):
            return variant.name
    return ""


def _setting_pattern(template: str, fields: dict) -> re.Pattern | None:
    """A reference's setting (``dra_general k={n_known_anomalies}``) as a pattern: the given fields as
    a cell formats them, any other (the defect type, a grid axis) one word; None when a field cannot
    take its format (``{racp:d}`` of a variant without RACP)."""
    parts = []
    for literal, name, spec, _ in string.Formatter().parse(template):
        parts.append(re.escape(literal))
        if name is None:
            continue
        try:
            parts.append(re.escape(format(fields[name], spec or "")) if name in fields else r"\S+")
        except (TypeError, ValueError):
            return None
    return re.compile("".join(parts))


def published_columns(protocol: Protocol, ours: set[str]) -> pd.DataFrame:
    """The paper's numbers as summary rows of their own columns: those of methods not run here, and
    those of the supervised competitors we run (beside our runs of them, one column per source)."""
    table = paper_table(protocol)
    if table.empty:
        return table
    ours_in_paper = {PAPER_METHOD_NAMES.get(m, m) for m in ours}
    shown = table[~table["method"].isin(ours_in_paper - SUPERVISED_METHODS)]
    rows = [
        {
            "dataset": r.dataset,
            "category": r.category,
            "defect_type": r.defect_type if protocol.expand else "",
            "column": _published_label(protocol, r.column, r.source, r.variant),
            "method": f"{PUBLISHED}{r.source}:{r.method}",
            "metric": r.metric,
            "mean": float(r.value),
            "std": float(r.pm) if not math.isnan(r.pm) else math.nan,
            "n_seeds": 0,
            "published": math.nan,
            "diff": math.nan,
            "flag": False,
        }
        for r in shown.itertuples()
    ]
    return pd.DataFrame(rows)


def _published_label(protocol: Protocol, printed: str, source: str, variant: str) -> str:
    """A published column's label: its variant first (as our columns' labels), then the printed header
    (its last level where the variant names the group, e.g. DRA's "Ten Training Anomaly Examples"),
    marked published, with the paper when it is not the BGAD paper."""
    grouped = len(protocol.variants) > 1 and variant != ""
    header = printed.rsplit(" / ", 1)[-1] if grouped else printed
    paper = SOURCE_TITLES.get(source)
    title = f"{header} [published, {paper}]" if paper else f"{header} [published]"
    return f"{variant} {title}" if grouped else title


def published_parts(method: str) -> tuple[str, str]:
    """(source, method) of a column's method key: ("", method) for ours, the source and the paper's
    name for a published column (``published:<source>:<method>``)."""
    if not method.startswith(PUBLISHED):
        return "", method
    source, _, name = method.removeprefix(PUBLISHED).partition(":")
    return source, name


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


Row = tuple[str, str, str]  # (dataset, category, defect type)
Column = tuple[str, str]  # (method, column label)


def natural_key(text: str) -> tuple:
    """``meta_epochs=8`` before ``meta_epochs=16``: numbers in a label compare as numbers."""
    parts = re.split(r"(\d+(?:\.\d+)?)", text)
    return tuple(float(p) if i % 2 else p for i, p in enumerate(parts))


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
        labels = [f"{k}={'/'.join(sorted(v, key=natural_key))}" for k, v in sorted(values.items())]
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


def _adhoc_for(records: list[dict]) -> Protocol:
    """The ad-hoc protocol covering ``records``: one row per dataset/category, a column per method."""
    datasets = {r["config"]["dataset"]: None for r in records}
    methods = tuple(sorted({r["config"]["method"] for r in records}))
    description = "Records that belong to no paper protocol (ad-hoc runs), mean ± std over seeds"
    update = {"datasets": datasets, "methods": methods, "description": description}
    return adhoc_protocol(next(iter(datasets))).model_copy(update=update)


def record_problems(store: ResultStore, records: list[dict]) -> list[str]:
    """Records that cannot be read, and records without a metric they should have (named)."""
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
