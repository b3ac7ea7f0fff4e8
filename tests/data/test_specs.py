"""Dataset specs are the one source of dataset facts: every other table is derived from them."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from bgad.bench.cli import app
from bgad.bench.published import DATASETS as PUBLISHED_DATASETS
from bgad.data import btad, download, verify
from bgad.data.convert import CONVERTERS
from bgad.data.datasets import DATASETS, IMAGE_LEVEL_ONLY, load_category
from bgad.data.specs import DATASET_SPECS, dataset_names
from bgad.data.synthetic import ensure_synthetic_dataset


def test_every_loader_has_a_spec_and_every_spec_a_loader() -> None:
    assert set(DATASETS.names()) == set(DATASET_SPECS.names())


def test_derived_tables_agree_with_the_specs() -> None:
    assert set(CONVERTERS) == set(dataset_names("raw"))
    assert set(download.ARCHIVES) == set(dataset_names("archive"))
    assert IMAGE_LEVEL_ONLY == {"elpv", "brainmri", "headct"}
    assert sum(t for t, _, _ in btad.MVTEC_COUNTS.values()) == 3629  # the official MVTec AD totals
    assert sum(t for _, t, _ in btad.MVTEC_COUNTS.values()) == 1725
    assert set(PUBLISHED_DATASETS) <= set(DATASET_SPECS.names())
    assert DATASET_SPECS.get("mvtec").kind("carpet") == "texture"
    assert DATASET_SPECS.get("mvtec").kind("bottle") == "object"


def test_image_level_only_is_defined_once() -> None:
    """The verifier reads a category as a cell does (``load_category``), not with its own copy of the
    list of datasets without pixel masks."""
    package = Path(verify.__file__).parents[1]
    homes = [p for p in package.rglob("*.py") if "\nIMAGE_LEVEL_ONLY" in p.read_text()]
    assert [p.relative_to(package).as_posix() for p in homes] == ["data/datasets.py"]


def _user_folder(tmp_path: Path, with_masks: bool) -> Path:
    import shutil

    source = ensure_synthetic_dataset() / "widget"
    target = tmp_path / "mine" / "my_parts"
    shutil.copytree(source, target)
    if not with_masks:
        shutil.rmtree(target / "ground_truth")
    return tmp_path / "mine"


@pytest.mark.parametrize("with_masks", [True, False])
def test_a_user_folder_loads_with_or_without_masks(tmp_path: Path, with_masks: bool) -> None:
    root = _user_folder(tmp_path, with_masks)
    data = load_category("folder", "my_parts", root)
    assert data.dataset == "folder" and data.has_pixel_masks is with_masks
    assert len(data.train) == 40 and any(s.is_anomalous for s in data.test)


def test_the_folder_dataset_needs_a_root() -> None:
    with pytest.raises(Exception, match="--data-root"):
        load_category("folder", "x", None)


def test_verify_folder_checks_without_official_counts_and_warns_on_small_sets(tmp_path: Path) -> None:
    root = _user_folder(tmp_path, with_masks=True)
    good = sorted((root / "my_parts" / "test" / "good").iterdir())
    for extra in good[3:]:
        extra.rename(tmp_path / extra.name)  # 3 normal test images left (moved, never deleted)
    result = CliRunner().invoke(app, ["data", "verify", "folder", "--data-root", str(root)])
    assert result.exit_code == 0, result.output
    assert "OK" in result.output and "warning: my_parts: 3 normal" in result.output
    result = CliRunner().invoke(app, ["data", "verify", "folder"])
    assert result.exit_code == 2 and "--data-root" in result.output


def test_verify_checks_the_identity_of_a_prepared_dataset(tmp_path: Path) -> None:
    root = tmp_path / "headct"
    root.mkdir()
    (root / "bgad_dataset.json").write_text('{"name": "headct"}')
    problems = verify.verify_dataset("elpv", root)
    assert len(problems) == 1 and "'headct' dataset" in problems[0] and "data verify headct" in problems[0]
    bare = tmp_path / "bare"
    bare.mkdir()
    assert "not prepared by bgad-bench" in verify.verify_dataset("aitex", bare)[0]
