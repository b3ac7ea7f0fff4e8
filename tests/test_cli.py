"""The command line through typer's runner: a tiny run, listings, and clear errors for bad options."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from bgad.cli import app

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
