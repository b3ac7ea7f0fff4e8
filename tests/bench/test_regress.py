"""`bgad-bench regress`: passes on matching results, fails on shifted ones, re-runs a real cell."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from test_report import make_record, write_store
from typer.testing import CliRunner

from bgad.bench.cli import app

runner = CliRunner()
REPO = Path(__file__).resolve().parents[2]


def _quick_store(root: Path) -> Path:
    records = [
        make_record("brainmri", "brainmri", m, s, {"image_auroc": 0.6 + 0.01 * s})
        for m in ("bgad", "nfad")
        for s in (0, 1, 2)
    ]
    write_store(root, records)
    result = runner.invoke(app, ["regress", "--results", str(root), "--update-expectations"])
    assert result.exit_code == 0, result.output
    return root


def test_passes_on_matching_results(tmp_path: Path) -> None:
    store = _quick_store(tmp_path / "store")
    result = runner.invoke(app, ["regress", "--results", str(store)])
    assert result.exit_code == 0, result.output
    assert "no regression" in result.output and "expectation" in result.output
    assert "distance reported" in result.output  # the quick profile is compared with the paper, not failed


def test_fails_on_a_shifted_store(tmp_path: Path) -> None:
    store = _quick_store(tmp_path / "store")
    path = next((store / "cells").glob("brainmri-brainmri-bgad-seed1-*/result.json"))
    record = json.loads(path.read_text())
    record["metrics"]["last_epoch"]["image_auroc"] += 0.05
    path.write_text(json.dumps(record))
    result = runner.invoke(app, ["regress", "--results", str(store)])
    assert result.exit_code == 1
    assert "FAIL" in result.output and "1 regression" in result.output


def test_a_result_of_another_metric_definition_is_a_regression(tmp_path: Path) -> None:
    store = _quick_store(tmp_path / "store")
    path = next((store / "cells").glob("brainmri-brainmri-bgad-seed1-*/result.json"))
    record = json.loads(path.read_text())
    record["metrics"]["variants"]["image_auroc"] = "an older definition v0"
    path.write_text(json.dumps(record))
    result = runner.invoke(app, ["regress", "--results", str(store)])
    assert result.exit_code == 1
    assert "definition" in result.output and "1 regression" in result.output


def test_missing_result_is_a_regression(tmp_path: Path) -> None:
    store = _quick_store(tmp_path / "store")
    for file in next((store / "cells").glob("brainmri-brainmri-nfad-seed0-*")).iterdir():
        file.unlink()
    result = runner.invoke(app, ["regress", "--results", str(store)])
    assert result.exit_code == 1 and "missing" in result.output


@pytest.mark.parametrize(("value", "code"), [(0.745, 0), (0.60, 1)])
def test_paper_profile_is_held_against_the_published_value(tmp_path: Path, value: float, code: int) -> None:
    records = [
        make_record("brainmri", "brainmri", "bgad", s, {"image_auroc": value}, profile="paper")
        for s in (0, 42, 100)
    ]
    write_store(tmp_path / "store", records)
    result = runner.invoke(app, ["regress", "--results", str(tmp_path / "store")])
    assert result.exit_code == code, result.output
    assert "0.740" in result.output  # arXiv Table 3, BGAD on BrainMRI


def test_quick_results_without_expectations_are_refused(tmp_path: Path) -> None:
    write_store(tmp_path / "store", [make_record("brainmri", "brainmri", "bgad", 0, {"image_auroc": 0.7})])
    result = runner.invoke(app, ["regress", "--results", str(tmp_path / "store")])
    assert result.exit_code == 2 and "--update-expectations" in result.output


def test_committed_results_pass() -> None:
    """What CI checks: the records committed in results/ against the committed expectations."""
    if not (REPO / "results" / "expectations.csv").exists():
        pytest.skip("no committed results/expectations.csv in this checkout")
    result = runner.invoke(app, ["regress", "--results", str(REPO / "results")])
    assert result.exit_code == 0, result.output


@pytest.mark.slow
@pytest.mark.data
def test_rerun_of_a_committed_real_cell_matches(shared_data: Path) -> None:
    """Re-run one small real cell (BrainMRI, NFAD, seed 0; the fastest committed one, to keep CI short)
    from scratch and compare with its committed record."""
    from bgad.data.convert import prepare_brainmri
    from bgad.paths import data_dir

    raw = shared_data / "brainmri_raw"
    if not raw.is_dir():
        pytest.skip(f"real BrainMRI copy not found at {raw}")
    cells = sorted(
        (REPO / "results" / "cells").glob("brainmri-brainmri-nfad-seed0-*"),
        key=lambda cell: json.loads((cell / "result.json").read_text())["timing_seconds"]["total"],
    )
    if not cells:
        pytest.skip("no committed BrainMRI NFAD seed-0 record in results/")
    prepare_brainmri(raw, data_dir() / "brainmri")
    result = runner.invoke(app, ["regress", "--results", str(REPO / "results"), "--rerun", cells[0].name])
    assert result.exit_code == 0, result.output
    assert "rerun" in result.output
    assert os.environ["BGAD_CACHE_DIR"] in str(data_dir())  # never the user's cache


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (
            "cell_id,dataset,method\nx,brainmri,bgad\n",
            "lacks the column(s) metric, value (its columns: cell_id",
        ),
        ("cell_id,profile,metric,value\nx,quick,image_auroc,high\n", "column value holds text"),
        (None, "cannot be read as CSV"),  # a folder
        ("", "cannot be read as CSV"),  # an empty file
    ],
)
def test_expectations_of_the_wrong_kind_are_one_clear_error(
    tmp_path: Path, content: str | None, says: str
) -> None:
    """Not a traceback from deep in the comparison (KeyError: 'cell_id'): the file and what it lacks."""
    store = _quick_store(tmp_path / "store")
    wrong = tmp_path / "wrong.csv"
    wrong.mkdir() if content is None else wrong.write_text(content)
    result = runner.invoke(app, ["regress", "--results", str(store), "--expectations", str(wrong)])
    text = " ".join(result.output.split())  # the console wraps long lines
    assert result.exit_code == 2, result.output
    assert f"--expectations {wrong}" in text and says in text and "Traceback" not in result.output


def test_update_expectations_into_a_folder_is_one_clear_error(tmp_path: Path) -> None:
    store = _quick_store(tmp_path / "store")
    (tmp_path / "folder").mkdir()
    args = [
        "regress",
        "--results",
        str(store),
        "--update-expectations",
        "--expectations",
        str(tmp_path / "folder"),
    ]
    result = runner.invoke(app, args)
    text = " ".join(result.output.split())
    assert result.exit_code == 2, result.output
    assert f"cannot write {tmp_path / 'folder'}" in text and "--expectations FILE" in text
