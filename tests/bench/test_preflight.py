"""The pre-run check of a grid: the same for a dry run, names too long, data that does not decode."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import bgad
from bgad.bench.config import ConfigError
from bgad.bench.preflight import preflight
from bgad.bench.store import ID_DIGEST_CHARS, name_excess
from bgad.data.datasets import load_category
from bgad.data.synthetic import ensure_synthetic_dataset


def _own_data(tmp_path: Path, category: str = "part") -> Path:
    root = tmp_path / "data"
    shutil.copytree(ensure_synthetic_dataset() / "widget", root / category)
    return root


def _cells(root: Path, category: str = "part", **settings: object) -> list:
    return bgad.plan_grid(
        dataset="folder", data_root=root, categories=[category], methods=["padim"], settings=settings
    )


def test_a_dry_run_refuses_an_unknown_backbone_as_the_run_does(tmp_path: Path) -> None:
    cells = bgad.plan_grid(
        "one_class",
        dataset="mvtec",
        data_root=tmp_path / "absent",
        settings={"backbone": "nosuch"},
        require_data=False,
    )
    for dry_run in (True, False):
        with pytest.raises(ConfigError, match="--backbone: unknown backbone 'nosuch'"):
            preflight(cells, dry_run=dry_run)


def test_what_the_machine_lacks_only_warns_in_a_dry_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import bgad.backbones as backbones

    monkeypatch.setattr(backbones, "_hub_reachable", lambda *a, **k: False)
    monkeypatch.setattr(backbones, "_in_hub_cache", lambda name: False)
    cells = bgad.plan_grid(
        "one_class", dataset="mvtec", data_root=tmp_path / "absent", profile="paper", require_data=False
    )
    (warning,) = preflight(cells, dry_run=True)
    assert "needs the ImageNet weights" in warning
    with pytest.raises(ConfigError, match="needs the ImageNet weights"):
        preflight(cells)


def test_a_category_name_too_long_for_the_store_says_by_how_much(tmp_path: Path) -> None:
    category = "p" * 200
    cells = _cells(_own_data(tmp_path, category), category)
    over = name_excess(f"folder-{category}-padim-seed0-{'0' * ID_DIGEST_CHARS}")
    assert over > 0 and name_excess(f"folder-{category[over:]}-padim-seed0-{'0' * ID_DIGEST_CHARS}") == 0
    with pytest.raises(ConfigError, match=f"category name '{category}' is too long.*shorten it by {over} "):
        preflight(cells, dry_run=True)


def test_data_is_decoded_once_before_any_cell(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import bgad.data.content as content

    root = _own_data(tmp_path)
    monkeypatch.setenv("BGAD_CACHE_DIR", str(tmp_path / "cache"))  # no digest decoded yet
    decoded: list[Path] = []
    read_image = content.read_image
    monkeypatch.setattr(content, "read_image", lambda path: decoded.append(path) or read_image(path))
    cells = _cells(root)
    preflight(cells)
    data = load_category("folder", "part", root)
    assert sorted(decoded) == sorted(s.image_path for s in (*data.train, *data.test))
    decoded.clear()
    preflight(cells)
    assert decoded == []  # a rerun decodes nothing
    bad = sorted((root / "part" / "test").rglob("*.png"))[-1]
    bad.write_bytes(bad.read_bytes()[:300])  # truncated
    with pytest.raises(ConfigError, match=f"(?s)nothing was run.*cannot read image {bad}.*truncated"):
        preflight(_cells(root))


def test_devnet_without_known_anomalies_is_refused_before_any_cell(tmp_path: Path) -> None:
    """DevNet has nothing to learn from without known anomalies: the plan says so and names -k, instead
    of a cell that fails after loading its images; DRA (pseudo anomalies) may run without them."""
    cells = bgad.plan_grid(
        dataset="folder",
        data_root=_own_data(tmp_path),
        categories=["part"],
        methods=["devnet", "dra"],
        settings={"n_known_anomalies": 0},
    )
    for dry_run in (True, False):
        with pytest.raises(ConfigError) as raised:
            preflight(cells, dry_run=dry_run)
        assert "DevNet learns from known anomalies and needs at least 1; set -k 1 or more" in str(
            raised.value
        )
        assert "DRA" not in str(raised.value)
