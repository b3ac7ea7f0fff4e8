"""Your own folder (`--dataset folder`) and official copies: every message names a command that exists
and the fix that applies (issue #21)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from test_mvtec import _img, make_tree
from typer.testing import CliRunner

import bgad
from bgad.bench.config import ConfigError
from bgad.bench.data_cli import data_app
from bgad.bench.preflight import preflight
from bgad.data.datasets import list_dataset_categories, load_category
from bgad.data.images import DatasetError
from bgad.data.verify import verify_dataset

VERIFY = "bgad-bench data verify folder --data-root"


def _no_prepare_folder(message: str) -> None:
    assert VERIFY in message and "data prepare folder" not in message, message


def test_a_missing_own_folder_names_the_verify_command(tmp_path: Path) -> None:
    for call in (
        lambda: load_category("folder", "part", tmp_path / "nowhere"),
        lambda: list_dataset_categories("folder", tmp_path / "nowhere"),
        lambda: list_dataset_categories("folder", tmp_path),  # exists, no categories
    ):
        with pytest.raises(DatasetError) as exc:
            call()
        _no_prepare_folder(str(exc.value))
    (problem,) = verify_dataset("folder", tmp_path / "nowhere")
    _no_prepare_folder(problem)


def test_an_incomplete_own_folder_names_the_verify_command(tmp_path: Path) -> None:
    root = make_tree(tmp_path)
    shutil.rmtree(root / "bottle" / "train" / "good")
    with pytest.raises(DatasetError) as exc:
        load_category("folder", "bottle", root)
    _no_prepare_folder(str(exc.value))


def test_data_prepare_folder_points_to_verify_which_works(tmp_path: Path) -> None:
    for command in ("prepare", "download"):
        result = CliRunner().invoke(data_app, [command, "folder"])
        assert result.exit_code == 2 and "unknown dataset" not in result.output, result.output
        assert "bgad-bench data verify folder --data-root DIR" in result.output
    root = make_tree(tmp_path)
    result = CliRunner().invoke(data_app, ["verify", "folder", "--data-root", str(root)])
    assert result.exit_code == 0 and "OK" in result.output, result.output


def test_official_text_files_are_accepted(tmp_path: Path) -> None:
    """MVTec AD ships license.txt and readme.txt in its root and in every category folder."""
    root = make_tree(tmp_path)
    for folder in (root, root / "bottle"):
        (folder / "license.txt").write_text("CC BY-NC-SA 4.0")
        (folder / "readme.txt").write_text("MVTec AD")
    (root / "bottle" / "NOTES.md").write_text("taken on 2024-01-01")
    assert verify_dataset("folder", root) == []
    assert verify_dataset("mvtec", root, check_counts=False) == []
    (root / "bottle" / "scores.csv").write_text("x")  # not documentation: still a stray
    (root / "bottle" / "test" / "good" / "readme.txt").write_text("x")  # inside an image folder
    text = "\n".join(verify_dataset("folder", root))
    assert "scores.csv" in text and "test/good/readme.txt" in text


def _own_folder(root: Path, normal_test: int, anomalous: int) -> Path:
    for i in range(4):
        _img(root / "part" / "train" / "good" / f"{i}.png", 10 * i)
    for i in range(normal_test):
        _img(root / "part" / "test" / "good" / f"{i}.png", 100 + i)
    for i in range(anomalous):
        _img(root / "part" / "test" / "scratch" / f"{i}.png", 200 + i)
    return root


def test_verify_names_a_missing_kind_of_test_image(tmp_path: Path) -> None:
    (problem,) = verify_dataset("folder", _own_folder(tmp_path / "a", 0, 3))
    assert "no normal test images" in problem and str(tmp_path / "a/part/test/good") in problem
    (problem,) = verify_dataset("folder", _own_folder(tmp_path / "b", 3, 0))
    assert "no anomalous test images" in problem


def _preflight_message(root: Path, k: int) -> str:
    cells = bgad.plan_grid(
        dataset="folder",
        data_root=root,
        categories=["part"],
        methods=["padim"],
        settings={"n_known_anomalies": k},
    )
    with pytest.raises(ConfigError) as exc:
        preflight(cells)
    return str(exc.value)


@pytest.mark.parametrize("k", [0, 2])
def test_no_normal_test_images_is_not_a_matter_of_k(tmp_path: Path, k: int) -> None:
    message = _preflight_message(_own_folder(tmp_path, 0, 3), k)
    assert "add normal test images" in message and str(tmp_path / "part/test/good") in message
    assert "lower -k" not in message


def test_no_anomalous_test_images_is_not_a_matter_of_k(tmp_path: Path) -> None:
    message = _preflight_message(_own_folder(tmp_path, 3, 0), 0)
    assert "add defect images" in message and "lower -k" not in message


def test_lower_k_when_the_draw_empties_the_test_set(tmp_path: Path) -> None:
    message = _preflight_message(_own_folder(tmp_path, 3, 2), 2)
    assert "with 2 known anomalies the test set keeps no anomalous image; lower -k" in message
