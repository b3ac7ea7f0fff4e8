"""Optional experiment tracking: each newly computed cell as one MLflow run (``--track mlflow``).

The run is logged from the cell's stored record, in the process that started the grid, after the
cell's outcome: every executor (in-process, joblib workers, Slurm jobs) ends in the same folder of the
store, so one code path serves them all and what MLflow shows is exactly what the store holds. Each run
carries the cell id as a tag; a cell whose run is already there (a rerun, a second grid on the same
store) is not logged twice. Tracking is a by-product: any failure to log is a warning, never a failed
cell. MLflow is an optional extra (``pip install -e '.[mlflow]'``), imported only when asked for.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bgad.errors import UserError
from bgad.paths import work_dir
from bgad.registry import UnknownNameError

log = logging.getLogger(__name__)

TRACKERS = ("mlflow",)
#: The tag that identifies a cell's run (its store folder name).
CELL_TAG = "bgad.cell_id"
#: The experiment runs go to unless ``MLFLOW_EXPERIMENT_NAME`` names another.
EXPERIMENT = "bgad-bench"
#: What the ``mlflow`` extra installs: the client, and the SQL store behind the default SQLite backend.
_EXTRA_MODULES = ("mlflow", "sqlalchemy", "alembic")


class TrackingUnavailableError(UserError, ImportError):
    """``--track`` names a tracker whose packages are not installed."""


def tracking_uri() -> str:
    """``MLFLOW_TRACKING_URI``, else a SQLite file in the work folder.

    SQLite is MLflow's own default backend since 3.7 (its file store is legacy) and needs no server;
    keeping it beside the default results keeps a session's runs and their store together.
    """
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{work_dir() / 'mlflow.db'}"


def open_tracker(name: str | None) -> MlflowTracker | None:
    """The tracker ``name`` (None: no tracking); fails at once when its packages are missing.

    Called before any cell runs, so a missing extra costs nothing but this one line.
    """
    if name is None:
        return None
    if name not in TRACKERS:
        raise UnknownNameError(f"unknown tracker {name!r} for --track; choose one of: {', '.join(TRACKERS)}")
    for module in _EXTRA_MODULES:
        try:
            __import__(module)
        except ImportError as exc:
            raise TrackingUnavailableError(
                f"--track mlflow needs the mlflow extra ({module} is missing): "
                "run `pip install -e '.[mlflow]'` in the checkout, or `pip install 'bgad-bench[mlflow]'`"
            ) from exc
    return MlflowTracker(tracking_uri(), os.environ.get("MLFLOW_EXPERIMENT_NAME") or EXPERIMENT)


def artifact_location(uri: str) -> str | None:
    """Where a new experiment keeps its artifacts: beside a local SQLite database; else the store decides.

    MLflow would put a SQLite store's artifacts in ``./mlruns`` of whatever folder the run started in.
    """
    if not uri.startswith("sqlite:///"):
        return None
    return (Path(uri.removeprefix("sqlite:///")).resolve().parent / "mlartifacts").as_uri()


class MlflowTracker:
    """Logs completed cell folders to one MLflow experiment (connected on the first cell)."""

    def __init__(self, uri: str, experiment: str) -> None:
        self.uri = uri
        self.experiment = experiment
        self._client: Any = None
        self._experiment_id: str | None = None

    def log_cell(self, folder: Path) -> str | None:
        """Log the cell in ``folder`` as one run; its run id, or None when already logged or on failure."""
        folder = Path(folder)
        try:
            return self._log(folder)
        except Exception as exc:
            log.warning(
                "cell %s was not logged to MLflow at %s (%s: %s); its record is in %s",
                folder.name,
                self.uri,
                type(exc).__name__,
                exc,
                folder,
            )
            return None

    def _connect(self) -> tuple[Any, str]:
        if self._client is None:
            from mlflow import MlflowClient

            client = MlflowClient(tracking_uri=self.uri)
            found = client.get_experiment_by_name(self.experiment)
            self._experiment_id = (
                found.experiment_id
                if found is not None
                else client.create_experiment(self.experiment, artifact_location=artifact_location(self.uri))
            )
            self._client = client
        return self._client, self._experiment_id

    def _log(self, folder: Path) -> str | None:
        from mlflow.entities import Metric, Param

        record = json.loads((folder / "result.json").read_text())
        client, experiment_id = self._connect()
        cell = record["cell_id"]
        done = f"tags.`{CELL_TAG}` = '{cell}' and attributes.status = 'FINISHED'"
        if client.search_runs([experiment_id], done, max_results=1):
            return None
        # Named as its store folder: readable (dataset, category, method, seed) and unique.
        run_id = client.create_run(experiment_id, run_name=cell, tags=run_tags(record)).info.run_id
        try:
            now = int(time.time() * 1000)
            metrics = [Metric(key, float(value), now, step) for key, value, step in run_metrics(record)]
            params = [Param(key, value) for key, value in run_params(record).items()]
            client.log_batch(run_id, metrics=metrics, params=params)
            for path in cell_files(folder):
                client.log_artifact(run_id, str(path))
        except BaseException:
            client.set_terminated(run_id, "FAILED")  # a half-logged run does not count as logged
            raise
        client.set_terminated(run_id)
        return run_id


def run_tags(record: dict) -> dict[str, str]:
    """The cell id (what makes logging idempotent) and the identity that is not a setting."""
    tags = {
        CELL_TAG: record["cell_id"],
        "bgad.config_hash": record["config_hash"],
        "bgad.dataset_content_sha256": str(record["dataset"].get("content_sha256")),
        "bgad.device": record["device"],
    }
    commit = record["provenance"].get("git", {}).get("commit")
    if commit:
        tags["mlflow.source.git.commit"] = commit
    return tags


def run_params(record: dict) -> dict[str, str]:
    """Every resolved setting of the cell, as text (MLflow parameters are strings)."""
    return {
        key: json.dumps(value) if isinstance(value, list | dict) else str(value)
        for key, value in record["config"].items()
    }


def run_metrics(record: dict) -> Iterator[tuple[str, float, int]]:
    """(name, value, step): per meta-epoch history, last and best metrics, timings and counters.

    The step is the record's 0-based ``meta_epoch``, also for ``last.*`` and ``best.*`` (the epoch the
    best value came from). A per-level list (the training log-likelihood) becomes one metric per level.
    """
    metrics = record["metrics"]
    for entry in metrics["per_epoch"]:
        step = entry["meta_epoch"]
        for key, value in entry.items():
            if key == "meta_epoch":
                continue
            if isinstance(value, list):
                yield from ((f"{key}_level{i}", v, step) for i, v in enumerate(value) if _is_number(v))
            elif _is_number(value):
                yield key, value, step
    last = metrics["last_epoch"]
    yield from (
        (f"last.{k}", v, last["meta_epoch"]) for k, v in last.items() if k != "meta_epoch" and _is_number(v)
    )
    for key, best in metrics["best_per_metric_paper_compatible"].items():
        if _is_number(best.get("value")):
            yield f"best.{key}", best["value"], best["meta_epoch"]
    yield from ((f"time_s.{k}", v, 0) for k, v in record["timing_seconds"].items() if _is_number(v))
    yield from ((f"count.{k}", v, 0) for k, v in record["counters"].items() if _is_number(v))


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def cell_files(folder: Path) -> list[Path]:
    """The cell's files (record, log, scores, samples, any figures); not ``model/``, which stays in the store."""
    return sorted(path for path in folder.iterdir() if path.is_file())
