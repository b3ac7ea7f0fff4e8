"""Regression checks of a result store.

Paper-profile results are held against the published values (per table cell, mean over seeds);
results of any other profile are held against the committed expectations of that profile (our own
numbers per cell), and their distance from the published values is reported, not failed. A single
cell can also be re-run from scratch and compared with its committed record.
"""

from __future__ import annotations

import json
import math
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import pandas as pd
from pydantic import Field, create_model

from bgad.bench.config import ConfigError, DataFile, RunConfig
from bgad.bench.protocols import Protocol, load_protocol, protocol_names, read_data_file
from bgad.bench.report import match_records, summarize
from bgad.bench.store import ResultStore, metric_value
from bgad.fileio import atomic_write_with, storage_error
from bgad.metrics import METRIC_NAMES, METRIC_VARIANTS


@dataclass(frozen=True)
class Check:
    """One comparison: what, our value, the reference, the tolerance, and whether it failed."""

    kind: str  # "published", "expectation", "rerun", "missing", "definition"
    what: str
    ours: float
    reference: float
    tolerance: float
    failed: bool
    note: str = ""


#: How far each metric may move: one key per metric, every metric required (no silent zero).
MetricTolerances = create_model(
    "MetricTolerances",
    __base__=DataFile,
    **{metric: (Annotated[float, Field(ge=0)], ...) for metric in METRIC_NAMES},
)


class RegressionFile(DataFile):
    """``protocols/regression.toml``: the tolerances against the published values (``paper``) and
    against the committed expectations of the other profiles (``expectations``)."""

    description: str = ""
    paper: MetricTolerances
    expectations: MetricTolerances


def tolerances() -> dict[str, dict[str, float]]:
    """``{"paper": {metric: tolerance}, "expectations": {...}}`` from the validated regression file."""
    return read_data_file(RegressionFile, "regression").model_dump(exclude={"description"})


def expectations_frame(records: list[dict]) -> pd.DataFrame:
    """The expectations file's content for the records of non-paper profiles (last-epoch metrics)."""
    rows = []
    for rec in records:
        if rec["config"]["profile"] == "paper":
            continue
        for metric in METRIC_NAMES:
            value = rec["metrics"]["last_epoch"].get(metric)
            if value is not None and not math.isnan(value):
                rows.append(
                    {
                        "cell_id": rec["cell_id"],
                        "profile": rec["config"]["profile"],
                        "metric": metric,
                        "value": value,
                    }
                )
    return pd.DataFrame(rows, columns=["cell_id", "profile", "metric", "value"])


def write_expectations(records: list[dict], path: Path) -> pd.DataFrame:
    """Write the expectations file of ``records`` (``--update-expectations``); a path that cannot
    be written (a folder, read-only) is a ``StorageError`` that names it."""
    frame = expectations_frame(records)
    try:
        atomic_write_with(path, lambda tmp: frame.to_csv(tmp, index=False))
    except OSError as exc:
        raise storage_error(path, exc, "pass a writable file with --expectations FILE") from exc
    return frame


def read_expectations(path: Path) -> pd.DataFrame:
    """The expectations file, or a ``ConfigError`` that names it and what is wrong with it (not a
    CSV, columns missing, values not numbers) instead of a traceback from deep in the comparison."""
    fix = "pass the file `regress --update-expectations` writes with --expectations FILE"
    try:
        frame = pd.read_csv(path)
    except (OSError, ValueError) as exc:  # a folder, bytes that are no CSV, an empty file
        raise ConfigError(f"--expectations {path} cannot be read as CSV ({exc}); {fix}") from exc
    missing = [c for c in ("cell_id", "metric", "value") if c not in frame.columns]
    if missing:
        has = ", ".join(map(str, frame.columns[:6])) + (", …" if len(frame.columns) > 6 else "")
        raise ConfigError(
            f"--expectations {path} is not an expectations file: it lacks the column(s) {', '.join(missing)} "
            f"(its columns: {has}); {fix}"
        )
    if not pd.api.types.is_numeric_dtype(frame["value"]):
        raise ConfigError(f"--expectations {path}: its column value holds text, not numbers; {fix}")
    return frame


def check_definitions(records: list[dict]) -> list[Check]:
    """A failing check for every reported metric whose record names another definition than this
    code computes: its number must not be compared with new ones (or expectations) until re-run."""
    checks = []
    for rec in records:
        recorded = rec["metrics"].get("variants", {})
        for metric in METRIC_NAMES:
            value = rec["metrics"]["last_epoch"].get(metric)
            if value is None or math.isnan(value) or recorded.get(metric) == METRIC_VARIANTS[metric]:
                continue
            checks.append(
                Check(
                    "definition",
                    f"{rec['cell_id']} {metric}",
                    value,
                    math.nan,
                    0.0,
                    True,
                    f"computed as {recorded.get(metric)!r}, this code computes {METRIC_VARIANTS[metric]!r}: "
                    "delete the cell's folder and run it again",
                )
            )
    return checks


def check_expectations(records: list[dict], expected: pd.DataFrame, tol: dict[str, float]) -> list[Check]:
    ours = expectations_frame(records).set_index(["cell_id", "metric"])["value"]
    flags = {(r["cell_id"], m): metric_value(r, m, "last")[1] for r in records for m in METRIC_NAMES}
    checks = []
    for row in expected.itertuples():
        key = (row.cell_id, row.metric)
        if key not in ours.index:
            flag = flags.get(key)
            checks.append(
                Check(
                    "missing",
                    f"{row.cell_id} {row.metric}",
                    math.nan,
                    row.value,
                    0.0,
                    True,
                    f"flagged {flag} in the store: no value" if flag else "expected result not in the store",
                )
            )
            continue
        value = float(ours[key])
        limit = tol.get(row.metric, 0.0)
        checks.append(
            Check(
                "expectation",
                f"{row.cell_id} {row.metric}",
                value,
                row.value,
                limit,
                abs(value - row.value) > limit + 1e-12,
            )
        )
    known = set(zip(expected["cell_id"], expected["metric"], strict=True))
    for cell_id, metric in ours.index:
        if (cell_id, metric) not in known:
            checks.append(
                Check(
                    "expectation",
                    f"{cell_id} {metric}",
                    float(ours[(cell_id, metric)]),
                    math.nan,
                    0.0,
                    False,
                    "new: not in the expectations (run with --update-expectations to add)",
                )
            )
    return checks


def check_published(protocols: list[Protocol], records: list[dict], tol: dict[str, float]) -> list[Check]:
    """Every table cell with a published value; failing only for paper-profile cells."""
    checks = []
    for protocol in protocols:
        matched = match_records(protocol, records)
        if matched.empty:
            continue
        summary = summarize(protocol, matched, "last")
        for row in summary.itertuples():
            if math.isnan(row.published):
                continue
            paper = row.profiles == "paper"
            where = f"{protocol.name} {row.dataset}/{row.category}{'/' + row.defect_type if row.defect_type else ''} {row.method} {row.column} {row.metric}".replace(
                "  ", " "
            )
            limit = tol.get(row.metric, 0.0)
            failed = paper and (row.n_seeds == 0 or abs(row.mean - row.published) > limit)
            note = "" if paper else f"profile {row.profiles}: distance reported, not failed"
            if row.n_seeds == 0:  # every seed's value flagged (diverged, tied): nothing to compare
                note = f"every seed flagged {row.flagged_as}" + ("" if paper else ", not failed")
            checks.append(
                Check("published", where, row.mean, row.published, limit if paper else math.nan, failed, note)
            )
    return checks


def rerun_cell(record: dict, work_dir: Path) -> dict:
    """Run the record's cell again from scratch (no feature cache) and return the new record."""
    from bgad.bench.cell import run_cell  # deferred: the cell pipeline imports albumentations, OpenCV, FrEIA

    cfg = RunConfig.from_dict(
        {**record["config"], "feature_cache": False}, source=f"record {record['cell_id']}"
    )
    folder = run_cell(cfg, work_dir)
    if folder.name != record["cell_id"]:
        raise ConfigError(
            f"re-running {record['cell_id']} gave cell {folder.name}: the dataset or the code's result version differs"
        )
    return json.loads((folder / "result.json").read_text())


def compare_rerun(committed: dict, fresh: dict, tol: dict[str, float]) -> list[Check]:
    checks = []
    for metric in METRIC_NAMES:
        old, old_flag = metric_value(committed, metric, "last")
        new, new_flag = metric_value(fresh, metric, "last")
        if old is None or new is None:
            continue
        limit = tol.get(metric, 0.0)
        what = f"{committed['cell_id']} {metric}"
        if old_flag or new_flag:  # a flagged value is no number: only the same flag agrees
            note = f"committed {old_flag or 'a number'}, re-run {new_flag or 'a number'}"
            checks.append(Check("rerun", what, new, old, limit, old_flag != new_flag, note))
            continue
        checks.append(Check("rerun", what, new, old, limit, abs(new - old) > limit + 1e-12))
    return checks


def all_checks(
    store: ResultStore, records: list[dict], expectations: Path, rerun: list[str], say: Callable[[str], None]
) -> list[Check]:
    """Every comparison ``bgad-bench regress`` makes: definitions, published values, expectations,
    and cells re-run from scratch. Raises ``ConfigError`` when there is nothing (valid) to compare."""
    tol = tolerances()
    checks = check_definitions(records)
    checks += check_published([load_protocol(p) for p in protocol_names()], records, tol["paper"])
    if expectations.exists():
        checks += check_expectations(records, read_expectations(expectations), tol["expectations"])
    elif any(r["config"]["profile"] != "paper" for r in records):
        raise ConfigError(
            f"{expectations} is missing: create it with `bgad-bench regress --update-expectations` and commit it"
        )
    for cell in rerun:
        if not store.is_complete(cell):
            raise ConfigError(
                f"cell {cell} is not in {store.cells_dir}; `bgad-bench run --dry-run ...` lists cell ids"
            )
        with tempfile.TemporaryDirectory() as tmp:
            say(f"re-running {cell} from scratch …")
            checks += compare_rerun(
                store.record(cell), rerun_cell(store.record(cell), Path(tmp)), tol["expectations"]
            )
    if not checks:
        raise ConfigError(f"nothing to compare in {store.root}")
    return checks
