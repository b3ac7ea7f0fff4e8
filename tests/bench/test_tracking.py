"""`--track mlflow`: each newly computed cell is one MLflow run in a local SQLite store, logged once.

CI installs the `mlflow` extra (noxfile), so there a missing MLflow fails these tests instead of
skipping them; a developer without the extra sees them skipped with the install command.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
from typer.testing import CliRunner

import bgad
from bgad.bench.cli import app
from bgad.bench.tracking import CELL_TAG, EXPERIMENT, MlflowTracker, TrackingUnavailableError, tracking_uri
from bgad.errors import UserError
from bgad.registry import UnknownNameError

TINY = {"input_size": 64, "meta_epochs": 2, "sub_epochs": 1, "warmup_epochs": 1, "n_known_anomalies": 1}
INSTALL = "pip install -e '.[mlflow]'"


def _mlflow() -> ModuleType:
    if os.environ.get("CI"):
        return importlib.import_module("mlflow")  # CI installs the extra: its absence is a failure
    return pytest.importorskip("mlflow", reason=f"the mlflow extra is not installed ({INSTALL})")


@pytest.fixture
def work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh work folder, so the default tracking store is ``tmp_path/mlflow.db``."""
    monkeypatch.setenv("BGAD_WORK_DIR", str(tmp_path))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    return tmp_path


@pytest.fixture(scope="module")
def tracked(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """One tiny NFAD cell run through ``bgad.run_cell(track="mlflow")`` into a fresh SQLite store."""
    _mlflow()
    root = tmp_path_factory.mktemp("tracked")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BGAD_WORK_DIR", str(root))
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        mp.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
        record = bgad.run_cell("nfad", results=root / "runs", feature_cache=False, track="mlflow", **TINY)
        yield {"record": record, "root": root}


def _runs_of(cell: str) -> list:
    client = _mlflow().MlflowClient(tracking_uri())
    experiment = client.get_experiment_by_name(EXPERIMENT)
    return client.search_runs([experiment.experiment_id], f"tags.`{CELL_TAG}` = '{cell}'")


def test_a_tracked_cell_is_one_run_with_its_settings_history_and_files(tracked: dict) -> None:
    record = tracked["record"]
    assert tracking_uri() == f"sqlite:///{tracked['root'] / 'mlflow.db'}"
    (run,) = _runs_of(record["cell_id"])
    assert run.info.status == "FINISHED" and run.data.tags[CELL_TAG] == record["cell_id"] == run.info.run_name
    assert run.data.params["method"] == "nfad" and run.data.params["meta_epochs"] == "2"
    assert run.data.params.keys() == record["config"].keys()
    client = _mlflow().MlflowClient(tracking_uri())
    history = client.get_metric_history(run.info.run_id, "image_auroc")
    per_epoch = record["metrics"]["per_epoch"]
    assert [(m.step, m.value) for m in history] == [(e["meta_epoch"], e["image_auroc"]) for e in per_epoch]
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train_loss")] == [0, 1]
    assert "train_ll_level0" in run.data.metrics
    assert run.data.metrics["last.image_auroc"] == record["metrics"]["last_epoch"]["image_auroc"]
    best = record["metrics"]["best_per_metric_paper_compatible"]["image_auroc"]
    assert run.data.metrics["best.image_auroc"] == best["value"]
    assert run.data.metrics["time_s.total"] == record["timing_seconds"]["total"]
    files = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"result.json", "run.log", "scores.csv"} <= files
    assert Path(tracked["root"], "mlartifacts").is_dir()  # artifacts beside the database, not in the cwd


def test_a_rerun_does_not_log_the_cell_again(tracked: dict) -> None:
    record = tracked["record"]
    again = bgad.run_cell(
        "nfad", results=tracked["root"] / "runs", feature_cache=False, track="mlflow", **TINY
    )
    assert again["cell_id"] == record["cell_id"]
    tracker = MlflowTracker(tracking_uri(), EXPERIMENT)
    assert tracker.log_cell(Path(record["folder"])) is None  # already there: the tag says so
    assert len(_runs_of(record["cell_id"])) == 1


def test_the_cli_logs_each_new_cell_once_into_the_store_mlflow_tracking_uri_names(
    work: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _mlflow()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{work / 'elsewhere' / 'track.db'}")
    monkeypatch.chdir(work)
    args = ["run", "-m", "padim", "-c", "widget", "--results", str(work / "runs"), "--track", "mlflow"]
    args += ["--set", "input_size=64"]
    first = CliRunner().invoke(app, args)
    assert first.exit_code == 0, first.output
    (folder,) = (work / "runs" / "cells").glob("synthetic-widget-padim-seed0-*")
    second = CliRunner().invoke(app, args)  # resumes: the cell is in the store
    assert second.exit_code == 0 and "1 already in" in second.output, second.output
    (run,) = _runs_of(folder.name)
    assert run.data.params["method"] == "padim" and "last.image_auroc" in run.data.metrics
    assert (work / "elsewhere" / "mlartifacts").is_dir() and not (work / "mlruns").exists()


def test_without_mlflow_track_fails_in_one_line_before_any_cell_runs(
    work: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "mlflow", None)  # `import mlflow` now raises ImportError
    result = CliRunner().invoke(app, ["run", "-m", "padim", "--results", str(work), "--track", "mlflow"])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and INSTALL in lines[0] and "--track mlflow" in lines[0], result.output
    assert not (work / "cells").exists()
    with pytest.raises(TrackingUnavailableError, match="mlflow is missing") as caught:
        bgad.run_cell("padim", results=work, track="mlflow")
    assert isinstance(caught.value, UserError) and not (work / "cells").exists()


def test_an_unknown_tracker_is_named(work: Path) -> None:
    with pytest.raises(UnknownNameError, match="'wandb'.*mlflow"):
        bgad.run_cell("padim", results=work, track="wandb")


def test_a_tracking_failure_is_a_warning_not_a_failed_cell(
    tracked: dict, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "a-file").write_text("")  # a database "inside" a file cannot be created
    unreachable = MlflowTracker(f"sqlite:///{tmp_path / 'a-file' / 'mlflow.db'}", EXPERIMENT)
    folder = Path(tracked["record"]["folder"])
    with caplog.at_level(logging.WARNING, logger="bgad.bench.tracking"):
        assert unreachable.log_cell(folder) is None
    assert f"cell {folder.name} was not logged to MLflow" in caplog.text
