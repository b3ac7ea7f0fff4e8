"""The Python API: plan and run cells, load results as a DataFrame, render reports, use a trained model.

Everything the command line does, as plain functions with explicit parameters: the command line's
``run`` plans with ``plan_grid`` and runs with ``run_grid`` (its progress views are ``GridView``s),
and ``run_cell`` is a grid of one cell, so every cell runs through one path and the runner's lease.
Importable as ``bgad.plan_grid``, ``bgad.run_grid``, ``bgad.run_cell``,
``bgad.load_results``, ``bgad.write_report``, ``bgad.load_model`` and ``bgad.predict``.

A worked example that runs as written is the README's (``tests/test_readme.py`` runs it).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from bgad.bench.config import ConfigError
from bgad.bench.executors import EXECUTORS, Executor, Outcome, error_summary, make_executor
from bgad.bench.protocols import adhoc_protocol, load_protocol
from bgad.bench.tracking import MlflowTracker, open_tracker
from bgad.paths import work_dir

# The planner, runner, store, reports and saved models are imported where used: they import torch or
# scikit-learn, which `import bgad` and `bgad-bench --help` need not pay for.
if TYPE_CHECKING:
    from bgad.bench.runner import GridView
    from bgad.bench.saved_model import TrainedModel
    from bgad.bench.store import ResultStore


def default_results() -> Path:
    """Where results go unless told otherwise: ``work_dir()/results`` (never the package's own data)."""
    return work_dir() / "results"


def default_reports() -> Path:
    return work_dir() / "reports"


def plan_grid(protocol: str | None = None, *, settings: dict[str, Any] | None = None, **options: Any) -> list:
    """The cells of a protocol (a paper table) or, with ``protocol=None``, of an ad-hoc grid.

    ``settings``: settings by name, as ``--set`` gives them. ``options`` narrow the grid, with the
    names of ``bgad.bench.planner.plan``: ``dataset``, ``categories``, ``methods``, ``seeds``,
    ``profile``, ``data_root`` and ``require_data``. An ad-hoc grid defaults to BGAD and NFAD, seed 0,
    the ``quick`` profile, on ``dataset`` (default: the built-in synthetic set).
    """
    from bgad.bench.planner import plan

    dataset = options.get("dataset")
    proto = adhoc_protocol(dataset or "synthetic") if protocol is None else load_protocol(protocol)
    if options.get("data_root"):
        options["data_root"] = Path(options["data_root"])
    return plan(proto, overrides=settings, **options)


def run_grid(
    cells: list,
    results: str | Path | None = None,
    *,
    executor: str = "local",
    max_retries: int = 1,
    track: str | None = None,
    dry_run: bool = False,
    view: GridView | None = None,
    **executor_options: Any,
) -> list:
    """Run the cells not yet in the store ``results`` (a rerun resumes); returns one outcome per cell run.

    The grid is checked first (settings, data, weights, known-anomaly draws): a problem stops it
    before any cell runs. ``dry_run=True`` checks it as the run would and runs nothing. A cell another
    live worker holds (its lease) is waited for, not run twice. ``view`` shows the run (default:
    nothing; warnings to the log); ``track="mlflow"`` logs each newly computed cell as an MLflow run
    (``bgad.bench.tracking``); ``executor_options`` go to the executor (``n_jobs`` for joblib, …).
    """
    from bgad.bench.preflight import preflight
    from bgad.bench.runner import GridView, cell_progress, pending_tasks, run_with_others
    from bgad.bench.store import ResultStore

    view = view or GridView()
    tracker = open_tracker(track)
    store = ResultStore(Path(results) if results else default_results())
    todo, done = pending_tasks(cells, store)
    view.planned(store, todo, done)
    done_ids = {c.id for c in done}
    elsewhere = EXECUTORS.get(executor).runs_elsewhere
    for warning in preflight(
        [c for c in cells if c.id not in done_ids], dry_run=dry_run, elsewhere=elsewhere
    ):
        view.warn(warning)
    runner = _executor(executor, max_retries, executor_options)
    if dry_run:
        return []
    if todo:
        store.check_writable()
    with view.running(todo) as hook, cell_progress(hook):
        outcomes = run_with_others(runner, todo, _settled(view, tracker, store))
    store.rebuild_table()
    return outcomes


def _executor(name: str, max_retries: int, options: dict[str, Any]) -> Executor:
    """The executor ``name``; a bad option (``n_jobs=0``) is a ``ConfigError`` that names it."""
    try:
        return make_executor(name, max_retries=max_retries, **options)
    except ValueError as exc:
        raise ConfigError(f"executor {name!r}: {exc}") from None


def _settled(view: GridView, tracker: MlflowTracker | None, store: ResultStore) -> Callable[[Outcome], None]:
    """After each cell: show it, and log it to the tracker when this process computed its record."""
    from bgad.bench.runner import ELSEWHERE

    def settled(outcome: Outcome) -> None:
        view.settled(outcome)
        if tracker is not None and outcome.ok and outcome.value != ELSEWHERE:
            tracker.log_cell(store.cell_dir(outcome.value))

    return settled


class CellFailedError(RuntimeError):
    """``run_cell``'s cell ran and failed; the message has the error and where its log is."""


def run_cell(
    method: str = "nfad",
    dataset: str = "synthetic",
    category: str = "widget",
    *,
    seed: int = 0,
    profile: str = "quick",
    results: str | Path | None = None,
    data_root: str | Path | None = None,
    save_model: bool = False,
    track: str | None = None,
    **settings: Any,
) -> dict:
    """Train and evaluate one cell (or return it from the store if done); its record, plus ``folder``.

    A grid of one cell (``plan_grid`` + ``run_grid``): checked before it runs, waited for when another
    worker holds it. ``settings`` are any settings by name (``meta_epochs=4``); the record is the
    cell's ``result.json`` as a dict. ``track="mlflow"`` logs the cell, when computed here, as an MLflow
    run. A failed cell raises ``CellFailedError``.
    """
    from bgad.bench.store import ResultStore

    overrides = {**settings, "save_model": save_model}
    narrow = {"categories": [category], "methods": [method], "seeds": [seed]}
    cells = plan_grid(dataset=dataset, **narrow, profile=profile, settings=overrides, data_root=data_root)
    failed = [o for o in run_grid(cells, results, max_retries=0, track=track) if not o.ok]
    store = ResultStore(Path(results) if results else default_results())
    folder = store.cell_dir(cells[0].id)
    if failed:
        where = store.cells_dir / f"{cells[0].id}.failed"
        raise CellFailedError(
            f"cell {cells[0].label} failed: {error_summary(failed[0].error)} (log: {where / 'run.log'}, "
            f"traceback: {where / 'error.txt'})"
        )
    return {**store.record(folder.name), "folder": str(folder)}


def load_results(results: str | Path | None = None) -> pd.DataFrame:
    """Every complete record of a store as one row: identity, settings, last and best metrics."""
    from bgad.bench.store import ResultStore

    return ResultStore(Path(results) if results else default_results()).table()


def write_report(
    results: str | Path | None = None,
    out: str | Path | None = None,
    protocols: list[str] | None = None,
    figures: bool = True,
) -> list[Path]:
    """Tables (Markdown, LaTeX, CSV) and figures of every protocol with records; returns the files."""
    from bgad.bench.report import render_reports

    return render_reports(
        Path(results) if results else default_results(),
        Path(out) if out else default_reports(),
        protocols,
        figures,
    )


def load_model(folder: str | Path, device: str = "cpu", backbone_weights: str | None = None) -> TrainedModel:
    """A model saved with ``save_model=True`` (``--save-model``): give its cell folder."""
    from bgad.bench.saved_model import TrainedModel

    return TrainedModel.load(folder, device, backbone_weights)


def predict(
    model: TrainedModel | str | Path,
    images: list[str | Path],
    out: str | Path | None = None,
    threshold: float | str | None = None,
) -> pd.DataFrame:
    """Image scores (and, with ``out``, PNG anomaly maps and a ``scores.csv``) for image files.

    ``threshold``: a number, ``"auto"`` (the F1-best threshold on the model's own test set, which does
    not carry over to unlike images: see the README), or None. With ``out``, maps are written at each
    image's size, laid out as the images' folders below their common folder.
    """
    from bgad.bench.saved_model import TrainedModel, write_predictions

    if not isinstance(model, TrainedModel):
        model = load_model(model)
    value = model.image_threshold if threshold == "auto" else threshold
    paths = [Path(p) for p in images]
    if out is not None:
        return write_predictions(model, paths, Path(out), None if value is None else float(value))
    scores = model.predict(paths)
    frame = pd.DataFrame({"path": [str(p) for p in paths], "score": scores.image_scores})
    if value is not None:
        frame["anomalous"] = frame["score"] > float(value)
    return frame
