"""The Python API: run a cell, load the results, keep the model, predict (the README's own example is
run as written by tests/test_readme.py)."""

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import bgad
from bgad.errors import UserError

TINY = {"input_size": 64, "meta_epochs": 2, "sub_epochs": 1, "warmup_epochs": 1, "n_known_anomalies": 1}


@pytest.fixture(scope="module")
def saved_cell(tmp_path_factory: pytest.TempPathFactory) -> dict:
    runs = tmp_path_factory.mktemp("runs")
    return bgad.run_cell(
        "nfad", "synthetic", "widget", results=runs, save_model=True, feature_cache=False, **TINY
    )


def test_a_cells_results_load_and_report(saved_cell: dict, tmp_path: Path) -> None:
    runs = Path(saved_cell["folder"]).parents[1]
    frame = bgad.load_results(runs)
    assert isinstance(frame, pd.DataFrame) and len(frame) == 1
    assert frame.loc[0, "method"] == "nfad" and 0 <= frame.loc[0, "image_auroc_last"] <= 1
    written = bgad.write_report(runs, tmp_path / "reports", figures=False)
    assert written and all(p.exists() for p in written)


def test_a_done_cell_is_returned_from_the_store_not_retrained(
    saved_cell: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    import bgad.bench.cell

    def no_training(*args: object, **kwargs: object) -> None:
        raise AssertionError("a cell already in the store was trained again")

    monkeypatch.setattr(bgad.bench.cell, "run_cell", no_training)
    runs = Path(saved_cell["folder"]).parents[1]
    again = bgad.run_cell(
        "nfad", "synthetic", "widget", results=runs, save_model=True, feature_cache=False, **TINY
    )
    assert again["cell_id"] == saved_cell["cell_id"] and again["folder"] == saved_cell["folder"]


def test_predict_on_the_cells_test_images_reproduces_its_scores(saved_cell: dict, tmp_path: Path) -> None:
    folder = Path(saved_cell["folder"])
    expected = pd.read_csv(folder / "scores.csv")
    root = Path(saved_cell["dataset"]["root"])
    images = [root / p for p in expected["path"]]
    model = bgad.load_model(folder)
    got = bgad.predict(model, images)
    np.testing.assert_allclose(got["score"], expected["score"], rtol=1e-6, atol=1e-9)
    written = bgad.predict(model, images[:3], out=tmp_path / "pred", threshold="auto")
    assert (tmp_path / "pred" / "scores.csv").exists() and "anomalous" in written
    assert all((tmp_path / "pred" / name).exists() for name in written["map"])


def test_plan_grid_lists_cells_without_running(tmp_path: Path) -> None:
    cells = bgad.plan_grid(methods=["nfad", "padim"], seeds=[0, 1], categories=["widget"])
    assert len(cells) == 4 and {c.config.method for c in cells} == {"nfad", "padim"}


def test_a_model_is_needed_to_predict(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="--save-model"):
        bgad.load_model(tmp_path)


def test_a_cell_another_worker_holds_is_waited_for_not_trained_twice(
    saved_cell: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``run_cell`` goes through the runner and its lease: while another live worker holds the cell,
    it waits, then returns the record that worker wrote instead of training the cell again."""
    import bgad.bench.cell
    from bgad.bench import runner

    def no_training(*args: object, **kwargs: object) -> None:
        raise AssertionError("a cell another worker holds was trained here too")

    monkeypatch.setattr(bgad.bench.cell, "run_cell", no_training)
    monkeypatch.setattr(runner, "WAIT_POLL_S", 0.05)
    cells = tmp_path / "runs" / "cells"
    cells.mkdir(parents=True)
    lease = cells / f".{saved_cell['cell_id']}.lease"
    lease.write_text("another-host-4242")  # a worker on another machine (counted alive while fresh)

    def the_other_worker_finishes() -> None:
        shutil.copytree(saved_cell["folder"], cells / ".copy")
        os.replace(cells / ".copy", cells / saved_cell["cell_id"])
        lease.unlink()

    other = threading.Timer(0.5, the_other_worker_finishes)
    other.start()
    record = bgad.run_cell(
        "nfad", "synthetic", "widget", results=tmp_path / "runs", save_model=True, feature_cache=False, **TINY
    )
    other.join()
    assert record["cell_id"] == saved_cell["cell_id"]
    assert Path(record["folder"]) == cells / saved_cell["cell_id"]


def test_a_failed_cell_names_its_error_and_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A cell that fails in ``run_cell`` (run through the grid's executor) raises with its error line and
    where its log and traceback are, after one attempt."""
    import bgad.bench.cell
    from bgad.bench.api import CellFailedError

    attempts = []

    def broken(*args: object, **kwargs: object) -> None:
        attempts.append(1)
        raise RuntimeError("the backbone broke")

    monkeypatch.setattr(bgad.bench.cell, "compute_features", broken)
    with pytest.raises(CellFailedError, match="the backbone broke") as caught:
        bgad.run_cell("padim", "synthetic", "widget", results=tmp_path, feature_cache=False, input_size=64)
    assert "run.log" in str(caught.value) and "error.txt" in str(caught.value) and len(attempts) == 1
