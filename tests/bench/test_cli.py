"""The command line through typer's runner: a tiny run, listings, and clear errors for bad options."""

from __future__ import annotations

from pathlib import Path

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
    ):
        assert name in listing.output
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
