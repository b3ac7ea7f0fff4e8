"""`predict` and saved models: output layout and sizes, the auto threshold, and one-line errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from sklearn.metrics import f1_score, precision_recall_curve
from typer.testing import CliRunner

import bgad
from bgad.bench.cell import resolve_device
from bgad.bench.cli import app
from bgad.bench.config import ConfigError
from bgad.bench.saved_model import f1_threshold, output_names

runner = CliRunner()


@pytest.fixture(scope="module")
def cell(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A saved PaDiM model (seconds to fit) on the synthetic widget."""
    runs = tmp_path_factory.mktemp("runs")
    record = bgad.run_cell(
        "padim", "synthetic", "widget", results=runs, save_model=True, feature_cache=False, input_size=64
    )
    return Path(record["folder"])


@pytest.fixture(scope="module")
def scored_set(cell: Path) -> tuple[Path, pd.DataFrame]:
    """The dataset's root and the cell's per-image scores (path, label, score)."""
    root = Path(json.loads((cell / "result.json").read_text())["dataset"]["root"])
    return root, pd.read_csv(cell / "scores.csv")


def predict_cli(*args: str) -> object:
    return runner.invoke(app, ["predict", *args])


def best_f1(labels: np.ndarray, scores: np.ndarray) -> float:
    precision, recall, _ = precision_recall_curve(labels, scores)
    return float(np.max(2 * precision * recall / np.maximum(precision + recall, 1e-12)))


def test_same_named_images_in_different_folders_keep_their_own_maps(
    scored_set: tuple[Path, pd.DataFrame], cell: Path, tmp_path: Path
) -> None:
    root, _ = scored_set
    for kind in ("crack", "good"):
        (tmp_path / "in" / kind).mkdir(parents=True)
        shutil.copy(root / "widget" / "test" / kind / "000.png", tmp_path / "in" / kind / "000.png")
    result = predict_cli("--model", str(cell), str(tmp_path / "in"), "--out", str(tmp_path / "out"))
    assert result.exit_code == 0, result.output
    frame = pd.read_csv(tmp_path / "out" / "scores.csv")
    assert list(frame["map"]) == ["crack/000_map.png", "good/000_map.png"]
    crack, good = (np.asarray(Image.open(tmp_path / "out" / m)) for m in frame["map"])
    assert not np.array_equal(crack, good)


def test_output_names_keep_the_suffix_only_where_two_images_share_a_stem() -> None:
    names = output_names([Path("/d/a/000.png"), Path("/d/a/000.jpg"), Path("/d/b/000.png")])
    assert names == [Path("a/000_png"), Path("a/000_jpg"), Path("b/000")]


def test_maps_and_masks_have_each_input_images_size(
    scored_set: tuple[Path, pd.DataFrame], cell: Path, tmp_path: Path
) -> None:
    root, _ = scored_set
    source = Image.open(root / "widget" / "test" / "crack" / "000.png").convert("RGB")
    sizes = {"big.png": (1024, 1024), "wide.png": (300, 200)}
    for name, size in sizes.items():
        source.resize(size).save(tmp_path / name)
    model = bgad.load_model(cell)
    frame = bgad.predict(model, [tmp_path / n for n in sizes], out=tmp_path / "out", threshold=0.0)
    for (name, size), map_name, mask_name in zip(sizes.items(), frame["map"], frame["mask"], strict=True):
        assert Image.open(tmp_path / "out" / map_name).size == size, name
        mask = Image.open(tmp_path / "out" / mask_name)
        assert mask.size == size and set(np.unique(np.asarray(mask))) <= {0, 255}


@pytest.mark.parametrize(
    ("labels", "scores"),
    [([0, 0, 0, 1, 1], [1.0, 2.0, 3.0, 4.0, 5.0]), ([1, 0, 1], [1.0, 2.0, 3.0])],
    ids=["separable", "best-when-all-flagged"],
)
def test_the_f1_threshold_classifies_its_set_as_when_it_was_chosen(labels: list, scores: list) -> None:
    labels_, scores_ = np.array(labels), np.array(scores)
    threshold = f1_threshold(labels_, scores_)
    assert f1_score(labels_, scores_ > threshold) == pytest.approx(best_f1(labels_, scores_))


def test_auto_threshold_reproduces_the_best_f1_on_the_cells_test_set(
    scored_set: tuple[Path, pd.DataFrame], cell: Path
) -> None:
    root, expected = scored_set
    got = bgad.predict(bgad.load_model(cell), [root / p for p in expected["path"]], threshold="auto")
    best = best_f1(expected["label"].to_numpy(), expected["score"].to_numpy())
    assert f1_score(expected["label"], got["anomalous"]) == pytest.approx(best)


def _cell_copy(cell: Path, tmp_path: Path) -> Path:
    copy = tmp_path / cell.name
    shutil.copytree(cell, copy)
    return copy


def _truncate_model(copy: Path) -> str:
    data = (copy / "model" / "model.pt").read_bytes()
    (copy / "model" / "model.pt").write_bytes(data[: len(data) // 2])
    return str(copy / "model" / "model.pt")


def _corrupt_json(copy: Path) -> str:
    (copy / "model" / "model.json").write_text("{\n")
    return str(copy / "model" / "model.json")


def _drop_model(copy: Path) -> str:
    shutil.rmtree(copy / "model")
    return "run without --save-model"


@pytest.mark.parametrize(
    ("damage", "fix"),
    [(_truncate_model, "--save-model"), (_corrupt_json, "--save-model"), (_drop_model, "--save-model")],
    ids=["truncated-model.pt", "corrupt-model.json", "cell-without-model"],
)
def test_a_damaged_or_missing_saved_model_is_one_line_naming_the_file(
    damage, fix: str, cell: Path, scored_set: tuple[Path, pd.DataFrame], tmp_path: Path
) -> None:
    copy = _cell_copy(cell, tmp_path)
    named = damage(copy)
    image = scored_set[0] / "widget" / "test" / "good" / "000.png"
    result = predict_cli("--model", str(copy), str(image), "--out", str(tmp_path / "out"))
    assert result.exit_code == 2, result.output
    assert len(result.output.strip().splitlines()) == 1, result.output
    assert named in result.output and fix in result.output and str(copy) in result.output


def _bad_model(tmp_path: Path, cell: Path) -> tuple[list[str], str]:
    return ["--model", str(tmp_path / "nope")], "does not exist"


def _model_is_a_file(tmp_path: Path, cell: Path) -> tuple[list[str], str]:
    (tmp_path / "afile").write_text("x")
    return ["--model", str(tmp_path / "afile")], "is a file"


def _folder_without_model(tmp_path: Path, cell: Path) -> tuple[list[str], str]:
    return ["--model", str(tmp_path)], "holds no saved model"


def _out_is_a_file(tmp_path: Path, cell: Path) -> tuple[list[str], str]:
    (tmp_path / "out.txt").write_text("x")
    return ["--model", str(cell), "--out", str(tmp_path / "out.txt")], "--out"


def _unreadable_image(tmp_path: Path, cell: Path) -> tuple[list[str], str]:
    (tmp_path / "broken.png").write_bytes(b"not a png")
    return ["--model", str(cell), str(tmp_path / "broken.png")], "broken.png"


def _missing_image(tmp_path: Path, cell: Path) -> tuple[list[str], str]:
    return ["--model", str(cell), str(tmp_path / "gone.png")], "gone.png does not exist"


def _not_an_image(tmp_path: Path, cell: Path) -> tuple[list[str], str]:
    (tmp_path / "notes.txt").write_text("x")
    return ["--model", str(cell), str(tmp_path / "notes.txt")], "notes.txt is not an image"


@pytest.mark.parametrize(
    "case",
    [
        _bad_model,
        _model_is_a_file,
        _folder_without_model,
        _out_is_a_file,
        _unreadable_image,
        _missing_image,
        _not_an_image,
    ],
    ids=lambda f: f.__name__.strip("_"),
)
def test_predict_input_errors_are_one_line(
    case, cell: Path, scored_set: tuple[Path, pd.DataFrame], tmp_path: Path
) -> None:
    args, expected = case(tmp_path, cell)
    image = str(scored_set[0] / "widget" / "test" / "good" / "000.png")
    if "--out" not in args:
        args += ["--out", str(tmp_path / "out")]
    result = predict_cli(*args, image)
    assert result.exit_code == 2, result.output
    assert len(result.output.strip().splitlines()) == 1 and expected in result.output, result.output


def _absent_devices() -> list[str]:
    """Device names this machine lacks (a GPU machine still lacks a hundredth GPU)."""
    absent = ["cuda:99", "gpu"]
    if not torch.cuda.is_available():
        absent.append("cuda")
    if not torch.backends.mps.is_available():
        absent.append("mps")
    return absent


@pytest.mark.parametrize("device", _absent_devices())
def test_a_device_this_machine_lacks_is_one_line_before_anything_loads(
    device: str, cell: Path, scored_set: tuple[Path, pd.DataFrame], tmp_path: Path, monkeypatch
) -> None:
    import bgad.bench.cell

    def no_backbone(*args: object, **kwargs: object) -> None:
        raise AssertionError("the backbone was built before the device was checked")

    monkeypatch.setattr(bgad.bench.cell, "frozen_backbone", no_backbone)
    image = str(scored_set[0] / "widget" / "test" / "good" / "000.png")
    result = predict_cli("--model", str(cell), image, "--out", str(tmp_path / "o"), "--device", device)
    assert result.exit_code == 2, result.output
    assert len(result.output.strip().splitlines()) == 1 and f"--device {device!r}" in result.output
    with pytest.raises(ConfigError, match="--device"):
        resolve_device(device)


@pytest.mark.parametrize("device", [d for d in _absent_devices() if d != "gpu"])
def test_run_stops_before_any_cell_on_a_device_this_machine_lacks(device: str, tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["run", "-m", "padim", "-c", "widget", "--results", str(tmp_path), "--device", device]
    )
    assert result.exit_code == 2, result.output
    assert f"--device {device!r}" in result.output and "nothing was run" in result.output
    assert not list(tmp_path.glob("cells/*"))
