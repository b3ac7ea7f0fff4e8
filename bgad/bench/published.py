"""Published numbers as a pandas DataFrame: the BGAD paper's (arXiv v1 tables, CVPR 2023 slides) and, to
print beside the open-set baselines, the DRA (CVPR 2022) and AHL (CVPR 2024) papers' Tables 1 and 2.

The numbers live in ``protocols/published/*.csv`` (installed as ``bgad.protocols/published``), one file
per printed table, in long format; ``protocols/published/README.md`` documents each file and every
discrepancy found in the printed numbers. This module only reads and validates them.
"""

from __future__ import annotations

import csv
import functools
import io
import math
from importlib.resources import files

import pandas as pd

from bgad.errors import UserError

COLUMNS = (
    "source",
    "table",
    "row",
    "column",
    "method",
    "dataset",
    "category",
    "metric",
    "setting",
    "value",
    "unit_printed",
    "pm",
    "note",
)
SOURCES = frozenset({"arxiv-v1", "cvpr2023-slides", "dra-cvpr2022", "ahl-cvpr2024"})
DATASETS = frozenset({"mvtec", "btad", "aitex", "elpv", "brainmri", "headct"})
METRICS = frozenset({"image_auroc", "pixel_auroc", "pro", "image_auroc_gain", "pixel_auroc_gain", "pro_gain"})
UNITS = frozenset({"fraction", "%"})
KEY = ("source", "table", "row", "column", "metric")


class PublishedDataError(UserError, ValueError):
    """A published-numbers CSV that breaks the schema; the message names the file and the row."""


def _published_dir():
    return files("bgad.protocols") / "published"


def table_files() -> list[str]:
    """Names of the published-table CSV files, sorted."""
    return sorted(p.name for p in _published_dir().iterdir() if p.name.endswith(".csv"))


def _parse_number(text: str, what: str, where: str, *, allow_empty: bool) -> float:
    if text == "":
        if allow_empty:
            return math.nan
        raise PublishedDataError(f"{where}: {what} is empty")
    try:
        value = float(text)
    except ValueError:
        raise PublishedDataError(f"{where}: {what} {text!r} is not a number") from None
    if not math.isfinite(value) or not 0.0 <= value <= 1.0:
        raise PublishedDataError(
            f"{where}: {what} {text!r} is outside [0, 1] (values are stored as fractions)"
        )
    return value


@functools.cache
def _read_one(name: str) -> pd.DataFrame:
    text = (_published_dir() / name).read_text(encoding="utf-8")
    reader = csv.DictReader(io.StringIO(text))
    if tuple(reader.fieldnames or ()) != COLUMNS:
        raise PublishedDataError(
            f"{name}: header is {reader.fieldnames!r}; expected exactly {list(COLUMNS)!r}"
        )
    records = []
    for line_no, rec in enumerate(reader, start=2):  # line 1 is the header
        where = f"{name} line {line_no} (row {rec.get('row')!r}, column {rec.get('column')!r})"
        if None in rec or any(v is None for v in rec.values()):
            raise PublishedDataError(f"{where}: wrong number of fields")
        for col, allowed in (
            ("source", SOURCES),
            ("dataset", DATASETS),
            ("metric", METRICS),
            ("unit_printed", UNITS),
        ):
            if rec[col] not in allowed:
                raise PublishedDataError(f"{where}: {col} {rec[col]!r} is not one of {sorted(allowed)}")
        for col in ("table", "row", "column", "method", "category", "setting"):
            if not rec[col].strip():
                raise PublishedDataError(f"{where}: {col} is empty")
        rec = dict(rec)
        rec["value_printed"] = rec["value"]
        rec["value"] = _parse_number(rec["value"], "value", where, allow_empty=False)
        rec["pm"] = _parse_number(rec["pm"], "pm", where, allow_empty=True)
        rec["file"] = name
        rec["line"] = line_no
        records.append(rec)
    df = pd.DataFrame.from_records(records, columns=[*COLUMNS, "value_printed", "file", "line"])
    dup = df[df.duplicated(list(KEY), keep=False)]
    if len(dup):
        first = dup.iloc[0]
        raise PublishedDataError(
            f"{name} line {first['line']}: duplicate key {tuple(first[k] for k in KEY)!r} "
            f"(lines {sorted(dup['line'].tolist())})"
        )
    return df


def load_published(table: str | None = None) -> pd.DataFrame:
    """All published numbers, or one table's.

    ``table`` is a file stem (``"arxiv_table1"``), a file name (``"arxiv_table1.csv"``) or a printed table
    label (``"Table 1"``, ``"One-class setting"``); a label that several papers print (``"Table 1"``)
    returns all their rows, so filter on ``source``. Columns: those of the CSVs (``value`` and ``pm`` as
    float fractions, ``pm`` NaN when not printed) plus ``value_printed`` (the string as printed),
    ``file`` and ``line``.
    """
    names = table_files()
    if table is not None:
        stem = table.removesuffix(".csv")
        if f"{stem}.csv" in names:
            names = [f"{stem}.csv"]
        else:
            df = pd.concat([_read_one(n) for n in names], ignore_index=True)
            sel = df[df["table"] == table]
            if sel.empty:
                raise KeyError(
                    f"no published table {table!r}; files: {', '.join(names)}; "
                    f"table labels: {', '.join(sorted(df['table'].unique()))}"
                )
            return sel.reset_index(drop=True)
    frames = [_read_one(n) for n in names]
    df = pd.concat(frames, ignore_index=True)
    dup = df[df.duplicated(list(KEY), keep=False)]
    if len(dup):
        raise PublishedDataError(
            f"duplicate key across files: {sorted(set(zip(dup['file'], dup['line'], strict=True)))!r}"
        )
    return df


def published_value(
    method: str,
    dataset: str,
    category: str,
    metric: str,
    setting: str,
    *,
    source: str | None = None,
    table: str | None = None,
) -> tuple[float, float | None] | None:
    """``(value, pm)`` as a fraction (``pm`` None where no ± was printed), or None when not published.

    The same number is sometimes printed in several tables (e.g. the slides print BGAD's multi-class
    results twice); that is fine when they agree. When they disagree, pass ``source`` and/or ``table``
    to choose; otherwise a ValueError lists the conflicting entries.
    """
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; known: {sorted(METRICS)}")
    df = load_published()
    sel = df[
        (df["method"] == method)
        & (df["dataset"] == dataset)
        & (df["category"] == category)
        & (df["metric"] == metric)
        & (df["setting"] == setting)
    ]
    if source is not None:
        sel = sel[sel["source"] == source]
    if table is not None:
        sel = sel[sel["table"] == table]
    if sel.empty:
        return None
    values = set(sel["value"].astype(float))
    pms = {float(p) for p in sel["pm"] if not math.isnan(p)}
    if len(values) > 1 or len(pms) > 1:
        where = "; ".join(
            f"{r.file} line {r.line} ({r.source}, {r.table}): {r.value_printed}" for r in sel.itertuples()
        )
        raise ValueError(
            f"published numbers disagree for {method}/{dataset}/{category}/{metric}/{setting!r}: {where}. "
            "Pass source= and/or table= to choose one."
        )
    # a table that repeats a number without its ± (e.g. arXiv Table 5 vs Table 1) does not conflict
    return values.pop(), (pms.pop() if pms else None)
