"""The Python API: plan and run cells, load results as a DataFrame, render reports, use a trained model.

Everything the command line does, as plain functions with explicit parameters (the command line is
a thin layer over these). Importable as ``bgad.plan_grid``, ``bgad.run_grid``, ``bgad.run_cell``,
``bgad.load_results``, ``bgad.write_report``, ``bgad.load_model`` and ``bgad.predict``.

Example (the README's)::

    import bgad

    record = bgad.run_cell("nfad", "synthetic", "widget", profile="quick", results="runs", save_model=True)
    table = bgad.load_results("runs")                 # one row per cell, metrics as columns
    model = bgad.load_model(record["folder"])
    scores = bgad.predict(model, ["my_image.png"])    # pandas DataFrame: path, score
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from bgad.paths import work_dir

log = logging.getLogger("bgad.bench.api")


def default_results() -> Path:
    """Where results go unless told otherwise: ``work_dir()/results`` (never the package's own data)."""
    return work_dir() / "results"


def default_reports() -> Path:
    return work_dir() / "reports"


def plan_grid(
    protocol: str | None = None,
    *,
    dataset: str | None = None,
    categories: list[str] | None = None,
    methods: list[str] | None = None,
    seeds: list[int] | None = None,
    profile: str | None = None,
    settings: dict[str, Any] | None = None,
    data_root: str | Path | None = None,
    require_data: bool = True,
) -> list:
    """The cells of a protocol (a paper table) or, with ``protocol=None``, of an ad-hoc grid.

    An ad-hoc grid defaults to BGAD and NFAD, seed 0, the ``quick`` profile, on ``dataset``
    (default: the built-in synthetic set). ``settings`` are ``--set`` overrides.
    """
    from bgad.bench.planner import plan
    from bgad.bench.protocols import adhoc_protocol, load_protocol

    proto = adhoc_protocol(dataset or "synthetic") if protocol is None else load_protocol(protocol)
    root = Path(data_root) if data_root else None
    return plan(proto, dataset, categories, methods, seeds, profile, settings, root, require_data)


def run_grid(
    cells: list,
    results: str | Path | None = None,
    *,
    executor: str = "local",
    max_retries: int = 1,
    on_done: Callable | None = None,
    track: str | None = None,
    **executor_options: Any,
) -> list:
    """Run the cells not yet in the store ``results`` (a rerun resumes); returns one outcome per cell run.

    ``track="mlflow"`` logs each newly computed cell as an MLflow run (``bgad.bench.tracking``).
    """
    from bgad.bench.executors import EXECUTORS, make_executor
    from bgad.bench.preflight import preflight
    from bgad.bench.runner import after_each_record, pending_tasks, run_with_others
    from bgad.bench.store import ResultStore
    from bgad.bench.tracking import open_tracker

    tracker = open_tracker(track)
    store = ResultStore(Path(results) if results else default_results())
    todo, done = pending_tasks(cells, store)
    for warning in preflight(
        [c for c in cells if c.id not in {d.id for d in done}],
        elsewhere=EXECUTORS.get(executor).runs_elsewhere,
    ):
        log.warning(warning)
    runner = make_executor(executor, max_retries=max_retries, **executor_options)
    with after_each_record(tracker.log_cell if tracker else None):
        outcomes = run_with_others(runner, todo, on_done)
    store.rebuild_table()
    return outcomes


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

    ``settings`` are any settings by name (``meta_epochs=4``); the record is the cell's
    ``result.json`` as a dict. ``track="mlflow"`` logs the cell, when computed here, as an MLflow run.
    """
    from bgad.bench.cell import run_cell as _run_cell
    from bgad.bench.config import resolve_config
    from bgad.bench.store import ResultStore, cell_id, is_complete_folder
    from bgad.bench.tracking import open_tracker
    from bgad.data.content import content_sha256
    from bgad.data.datasets import load_category

    tracker = open_tracker(track)
    plan = {"method": method, "dataset": dataset, "category": category, "seed": seed}
    if data_root:
        plan["data_root"] = str(data_root)
    overrides = {**settings, "save_model": save_model}
    cfg = resolve_config(profile, overrides, [("bgad.run_cell", plan)])
    store = ResultStore(Path(results) if results else default_results())
    data = load_category(dataset, category, Path(data_root) if data_root else None)
    folder = store.cells_dir / cell_id(cfg, content_sha256(data))  # content hashes are cached
    if not is_complete_folder(folder):
        folder = _run_cell(cfg, store.cells_dir)
        store.rebuild_table()
        if tracker:
            tracker.log_cell(folder)
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


def load_model(folder: str | Path, device: str = "cpu", backbone_weights: str | None = None):  # noqa: ANN201
    """A model saved with ``save_model=True`` (``--save-model``): give its cell folder."""
    from bgad.bench.saved_model import TrainedModel

    return TrainedModel.load(folder, device, backbone_weights)


def predict(
    model, images: list[str | Path], out: str | Path | None = None, threshold: float | str | None = None
) -> pd.DataFrame:  # noqa: ANN001
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
