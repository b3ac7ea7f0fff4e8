"""The grid runner: skip and resume, two writers on one store, and the executors end to end."""

from __future__ import annotations

import multiprocessing
import os
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from bgad.bench import runner as grid
from bgad.bench.cli import app
from bgad.bench.executors import LocalExecutor
from bgad.bench.planner import plan
from bgad.bench.protocols import load_protocol
from bgad.bench.runner import execute_cell, pending_tasks
from bgad.bench.store import ResultStore

TINY = {
    "input_size": 64,
    "meta_epochs": 1,
    "sub_epochs": 1,
    "phase1_epochs": 1,
    "warmup_epochs": 1,
    "threads": 1,
}


def _cells(tmp_path: Path, seeds: list[int]) -> list:
    proto = tmp_path / "tiny.toml"
    proto.write_text(
        'description = "tiny"\nprofile = "quick"\nmethods = ["nfad"]\n[datasets]\nsynthetic = ["weave"]\n'
    )
    return plan(load_protocol(str(proto)), seeds=seeds, overrides=TINY)


def test_interrupted_grid_resumes_without_recomputing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = ResultStore(tmp_path / "store")
    cells = _cells(tmp_path, [0, 1, 2])
    todo, done = pending_tasks(cells, store)
    assert len(todo) == 3 and not done
    import bgad.bench.cell

    real_run_cell, calls = bgad.bench.cell.run_cell, []

    def interrupted(cfg, *args, **kwargs):
        calls.append(cfg.seed)
        if len(calls) == 2:
            raise KeyboardInterrupt  # Ctrl-C in the middle of the second cell
        return real_run_cell(cfg, *args, **kwargs)

    monkeypatch.setattr(bgad.bench.cell, "run_cell", interrupted)
    with pytest.raises(KeyboardInterrupt):
        LocalExecutor(max_retries=0).run(execute_cell, todo, [t.cell_id for t in todo])
    first = store.cell_dir(todo[0].cell_id) / "result.json"
    assert first.exists() and not store.is_complete(todo[1].cell_id)
    stamp = first.stat().st_mtime_ns
    monkeypatch.setattr(bgad.bench.cell, "run_cell", real_run_cell)
    todo2, done2 = pending_tasks(cells, store)
    assert [c.id for c in done2] == [todo[0].cell_id] and len(todo2) == 2
    outcomes = LocalExecutor().run(execute_cell, todo2, [t.cell_id for t in todo2])
    assert all(o.ok for o in outcomes)
    assert first.stat().st_mtime_ns == stamp  # the finished cell was not recomputed
    assert all(store.is_complete(c.id) for c in cells)
    assert not [p for p in store.cells_dir.iterdir() if p.name.startswith(".")]  # no partial folder left


def _writer(store_root: str, tasks: list) -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    for task in tasks:
        execute_cell(task)
        ResultStore(store_root).rebuild_table()


def test_two_writers_never_corrupt_the_store(tmp_path: Path) -> None:
    store = ResultStore(tmp_path / "store")
    todo, _ = pending_tasks(_cells(tmp_path, [0, 1, 2]), store)
    ctx = multiprocessing.get_context("spawn")
    # Both writers run the middle cell: the first to finish wins, the other keeps it.
    jobs = [
        ctx.Process(target=_writer, args=(str(store.root), todo[:2])),
        ctx.Process(target=_writer, args=(str(store.root), todo[1:])),
    ]
    for job in jobs:
        job.start()
    for job in jobs:
        job.join(timeout=600)
        assert job.exitcode == 0
    assert all(store.is_complete(t.cell_id) for t in todo)
    table = pd.read_csv(store.root / "table.csv")
    assert sorted(table["cell_id"]) == sorted(t.cell_id for t in todo)
    assert not [p for p in store.cells_dir.iterdir() if p.name.startswith(".")]


def _run_args(results: Path, *extra: str) -> list[str]:
    """`bgad-bench run` of NFAD on synthetic weave with the tiny settings, plus ``extra`` options."""
    return ["run", "-m", "nfad", "-c", "weave", "--results", str(results), *extra] + [
        x for k, v in TINY.items() for x in ("--set", f"{k}={v}")
    ]


def test_joblib_executor_through_the_cli(tmp_path: Path) -> None:
    args = _run_args(tmp_path, "-s", "0", "-s", "1", "--executor", "joblib", "--workers", "2")
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert len(list((tmp_path / "cells").glob("synthetic-weave-nfad-seed*/result.json"))) == 2
    again = CliRunner().invoke(app, [*args, "--dry-run"])
    assert again.output.count("done  synthetic-weave-nfad") == 2


def test_failed_cells_are_listed_with_their_log_and_exit_non_zero(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import bgad.bench.cell

    def broken(*args, **kwargs):
        raise RuntimeError("the backbone broke")

    monkeypatch.setattr(bgad.bench.cell, "compute_features", broken)
    result = CliRunner().invoke(app, _run_args(tmp_path, "--max-retries", "0"))
    assert result.exit_code == 1
    assert "1 cell(s) failed" in result.output and "the backbone broke" in result.output
    failed = next((tmp_path / "cells").glob("*.failed"))
    assert "computing features" in (failed / "run.log").read_text()  # the log's last lines are shown
    assert "| " in result.output and str(failed / "run.log") in result.output.replace("\n", "")
    traceback_text = (failed / "error.txt").read_text()
    assert traceback_text.startswith("Traceback") and "the backbone broke" in traceback_text


def test_bad_setting_stops_the_plan_before_any_cell(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, _run_args(tmp_path, "--set", "lr=nan", "--dry-run"))
    assert result.exit_code == 2 and "lr=" in result.output and "--set" in result.output
    assert not (tmp_path / "cells").exists()


@pytest.mark.slurm
def test_slurm_executor_runs_cells_end_to_end(slurm_cluster: None, tmp_path: Path) -> None:
    args = _run_args(tmp_path, "-s", "0", "-s", "1", "--executor", "slurm", "--time-min", "10")
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    records = list(ResultStore(tmp_path).records())
    assert len(records) == 2 and {r["config"]["seed"] for r in records} == {0, 1}
    assert grid._progress_hook is None


def test_slurm_without_a_cluster_is_one_clear_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    result = CliRunner().invoke(app, _run_args(tmp_path, "--executor", "slurm"))
    assert result.exit_code == 2, result.output
    assert "sinfo" in result.output and "Traceback" not in result.output


@pytest.mark.slow
def test_two_runs_on_one_store_split_the_grid(tmp_path: Path) -> None:
    """Two concurrent `bgad-bench run` processes on a 4-cell grid: each cell is trained exactly once,
    and both workers train some. (How much sooner they finish is measured by benchmarks/load.py, not
    here: a wall-time assertion fails on a busy machine.)"""
    import re
    import subprocess
    import sys

    args = ["-m", "nfad", "-c", "widget", "-s", "0", "-s", "1", "-s", "2", "-s", "3"]
    # Cells long enough (several seconds each) that both workers are up before one could take them all.
    work = {**TINY, "meta_epochs": 6, "sub_epochs": 4, "threads": 1}
    args += [f"--set={k}={v}" for k, v in work.items()]
    cmd = [sys.executable, "-m", "bgad.bench.cli", "run", "--results", str(tmp_path / "shared"), *args]
    pair = [
        subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for _ in range(2)
    ]
    outputs = [p.communicate(timeout=900)[0] for p in pair]
    assert all(p.returncode == 0 for p in pair), outputs
    trained = [re.findall(r"^\S+ (.+?) \| done in ", out, re.MULTILINE) for out in outputs]
    every = [label for worker in trained for label in worker]
    assert len(every) == 4 and len(set(every)) == 4, trained  # each cell trained exactly once
    assert all(trained), trained  # both workers trained some
    assert len(list(ResultStore(tmp_path / "shared").records())) == 4


def test_the_grid_is_checked_before_any_cell_runs(tmp_path: Path) -> None:
    """Offline hub weights or too many known anomalies: one error for the grid, nothing run, no retry."""
    result = CliRunner().invoke(app, _run_args(tmp_path, "-k", "500"))
    assert result.exit_code == 2, result.output
    assert "nothing was run" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "cells").exists() or not any((tmp_path / "cells").iterdir())


def test_unobtainable_weights_stop_the_grid_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import bgad.backbones as backbones

    monkeypatch.setattr(backbones, "_hub_reachable", lambda *a, **k: False)
    monkeypatch.setattr(backbones, "_in_hub_cache", lambda name: False)
    result = CliRunner().invoke(
        app, _run_args(tmp_path, "--backbone", "tf_efficientnet_b6", "-s", "0", "-s", "1")
    )
    assert result.exit_code == 2, result.output
    assert result.output.count("needs the ImageNet weights") == 1 and "--backbone-weights" in result.output
