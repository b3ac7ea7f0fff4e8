"""The command line through typer's runner: a tiny run, listings, and clear errors for bad options."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bgad.bench.cli import app

runner = CliRunner()
TINY = [
    "--set",
    "input_size=64",
    "--set",
    "meta_epochs=1",
    "--set",
    "sub_epochs=1",
    "--set",
    "phase1_epochs=1",
]


def test_run_prints_a_results_table(tmp_path: Path) -> None:
    result = runner.invoke(app, ["run", "-m", "nfad", "-c", "weave", "--results", str(tmp_path), *TINY])
    assert result.exit_code == 0, result.output
    assert "Results" in result.output and "synthetic/weave" in result.output
    assert len(list(tmp_path.glob("cells/synthetic-weave-nfad-seed0-*/result.json"))) == 1


def test_unknown_method_lists_valid_ones(tmp_path: Path) -> None:
    result = runner.invoke(app, ["run", "-m", "bgadd", "--results", str(tmp_path)])
    assert result.exit_code == 2
    assert "Did you mean 'bgad'" in result.output and "nfad" in result.output


def test_unknown_setting_is_named(tmp_path: Path) -> None:
    result = runner.invoke(app, ["run", "-m", "nfad", "--set", "meta_epoch=3", "--results", str(tmp_path)])
    assert result.exit_code == 2
    assert "meta_epoch" in result.output and "meta_epochs" in result.output


def test_unknown_category_lists_known_ones(tmp_path: Path) -> None:
    result = runner.invoke(app, ["run", "-m", "nfad", "-c", "zipper", "--results", str(tmp_path), *TINY])
    assert result.exit_code == 2
    assert "weave" in result.output and "widget" in result.output


def test_missing_dataset_says_how_to_prepare(tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        ["run", "--dataset", "brainmri", "--data-root", str(tmp_path / "nope"), "--results", str(tmp_path)],
    )
    assert result.exit_code == 2
    assert "nope" in result.output and "prepare" in result.output


def test_ls_and_config() -> None:
    listing = runner.invoke(app, ["ls"])
    assert listing.exit_code == 0
    for name in (
        "bgad",
        "bgad_wo",
        "nfad",
        "cflow",
        "tf_efficientnet_b6",
        "wide_resnet50_2",
        "paper",
        "quick",
        "devnet",
        "dra",
        "resnet18",
    ):
        assert name in listing.output
    flat = " ".join(listing.output.replace("│", " ").split())  # the table wraps long descriptions
    assert "[reference, not in the paper]" in flat  # printed as text, not swallowed as rich markup
    assert flat.count("[supervised competitor, same known anomalies]") == 2
    assert "Ding, Pang, Shen" in flat
    config = runner.invoke(app, ["config", "--profile", "paper", "-m", "cflow"])
    assert config.exit_code == 0
    assert '"backbone": "wide_resnet50_2"' in config.output and '"fiber_size": 256' in config.output


def test_a_category_with_a_dot_is_in_the_table_and_resumed(tmp_path: Path) -> None:
    import shutil

    from bgad.data.synthetic import ensure_synthetic_dataset

    shutil.copytree(ensure_synthetic_dataset() / "widget", tmp_path / "data" / "part.v2")
    args = [
        "run",
        "--dataset",
        "folder",
        "--data-root",
        str(tmp_path / "data"),
        "-c",
        "part.v2",
        "-m",
        "padim",
    ]
    args += ["--results", str(tmp_path / "results"), "--set", "input_size=64"]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    assert "folder/part.v2" in first.output.split("Results")[1]  # the record is in the table
    again = runner.invoke(app, args)
    assert "1 already in" in again.output and "folder/part.v2" in again.output.split("Results")[1]


def test_a_dry_run_is_checked_as_the_run_is(tmp_path: Path) -> None:
    for bad, needle in (
        (["--backbone", "nosuch"], "unknown backbone 'nosuch'"),
        (["--backbone-weights", str(tmp_path)], f"--backbone-weights {tmp_path} is a folder"),
        (["--backbone-weights", str(tmp_path / "w.pth")], "does not exist"),
        (["-s", str(2**32)], "(--seed"),
    ):
        result = runner.invoke(app, ["run", "-m", "padim", "--dry-run", "--results", str(tmp_path), *bad])
        assert result.exit_code == 2 and needle in result.output and "Traceback" not in result.output, bad


def test_a_data_root_that_is_a_file_says_so(tmp_path: Path) -> None:
    (tmp_path / "data").write_text("not a folder")
    result = runner.invoke(
        app,
        [
            "run",
            "--dataset",
            "folder",
            "--data-root",
            str(tmp_path / "data"),
            "-c",
            "x",
            "--dry-run",
            "--results",
            str(tmp_path),
        ],
    )
    assert result.exit_code == 2 and "is a file, not a folder" in result.output, result.output


def test_run_plans_and_runs_through_the_api(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """One path to run cells: `run` calls ``api.plan_grid`` and ``api.run_grid`` (with its view), not a
    copy of them; outside a terminal the view prints plain lines."""
    from bgad.bench import api
    from bgad.bench.cli_views import LinesView

    calls: dict[str, list] = {"plan_grid": [], "run_grid": []}
    for name in calls:
        real = getattr(api, name)

        def spy(*args: object, _real=real, _name=name, **kwargs: object) -> object:
            calls[_name].append(kwargs)
            return _real(*args, **kwargs)

        monkeypatch.setattr(api, name, spy)
    args = [
        "run",
        "-m",
        "padim",
        "-c",
        "widget",
        "--dry-run",
        "--results",
        str(tmp_path),
        "--set",
        "input_size=64",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert len(calls["plan_grid"]) == 1 and len(calls["run_grid"]) == 1
    assert calls["run_grid"][0]["dry_run"] is True and isinstance(calls["run_grid"][0]["view"], LinesView)
    assert "todo  synthetic-widget-padim-seed0" in result.output


def test_several_datasets_plan_one_grid_after_the_other(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A repeated --dataset adds that dataset's cells (typer would otherwise keep only the last; a
    repeat adds nothing); --category with several datasets is refused, naming the options."""
    monkeypatch.setenv("BGAD_DATA_DIR", str(tmp_path / "no-data"))  # planned from the datasets' facts
    args = ["run", "-m", "padim", "--dry-run", "--results", str(tmp_path)]
    result = runner.invoke(
        app, [*args, "--dataset", "brainmri", "--dataset", "headct", "--dataset", "brainmri"]
    )
    assert result.exit_code == 0, result.output
    planned = [line.split()[1] for line in result.output.splitlines() if line.startswith("todo")]
    assert len(planned) == 2, planned
    assert planned[0].startswith("brainmri-brainmri-padim-seed0-"), planned
    assert planned[1].startswith("headct-headct-padim-seed0-"), planned
    refused = runner.invoke(app, [*args, "--dataset", "brainmri", "--dataset", "headct", "-c", "brainmri"])
    assert refused.exit_code == 2 and "--category" in refused.output and "several --dataset" in refused.output


def test_a_bad_executor_option_stops_a_dry_run_too(tmp_path: Path) -> None:
    """The executor is built (and its options checked) before a dry run stops: one line, exit 2."""
    args = ["run", "-m", "padim", "--dry-run", "--executor", "joblib", "--workers", "0"]
    result = runner.invoke(app, [*args, "--results", str(tmp_path)])
    assert result.exit_code == 2, result.output
    assert (
        "executor 'joblib'" in result.output
        and "n_jobs" in result.output
        and "Traceback" not in result.output
    )


def test_in_a_terminal_the_run_draws_bars(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A terminal gets the bars view: the grid's bar (with the executor) and the cell's, then the table."""
    from rich.console import Console

    from bgad.bench import cli

    screen = io.StringIO()
    monkeypatch.setattr(cli, "console", Console(file=screen, force_terminal=True, width=140))
    args = ["run", "-m", "padim", "-c", "widget", "--results", str(tmp_path), "--set", "input_size=64"]
    result = runner.invoke(app, [*args, "--no-feature-cache"])
    shown = screen.getvalue()
    assert result.exit_code == 0, result.output + shown
    assert "local executor" in shown and "synthetic/widget padim seed 0" in shown
    assert "Results: last epoch" in shown
