"""Grid expansion over the synthetic dataset: counts, ids, determinism, and bad input."""

from __future__ import annotations

from pathlib import Path

import pytest

from bgad.bench.config import ConfigError
from bgad.bench.planner import plan
from bgad.bench.protocols import load_protocol
from bgad.data.datasets import load_category
from bgad.registry import UnknownNameError
from bgad.selection import select_known_anomalies


def _proto(tmp_path: Path, body: str) -> str:
    path = tmp_path / "p.toml"
    path.write_text('description = "test"\nprofile = "quick"\nseeds = [0, 1]\n' + body)
    return str(path)


def test_grid_variants_and_defect_type_expansion(tmp_path: Path) -> None:
    path = _proto(
        tmp_path,
        'methods = ["bgad", "nfad"]\nexpand = "defect_types"\n[datasets]\nsynthetic = ["widget"]\n'
        '[settings]\nanomaly_selection = "one_class"\nn_known_anomalies = 2\n[grid]\nbeta = [0.01, 0.05]\n',
    )
    cells = plan(load_protocol(path))
    types = load_category("synthetic", "widget").defect_types
    assert len(cells) == 2 * len(types) * 2 * 2  # beta × types × methods × seeds
    assert {c.config.anomaly_defect_type for c in cells} == set(types)
    assert {c.config.beta for c in cells} == {0.01, 0.05}
    assert len({c.id for c in cells}) == len(cells)
    again = plan(load_protocol(path))
    assert [c.id for c in again] == [c.id for c in cells]
    one_point = plan(load_protocol(path), overrides={"beta": 0.05})  # --set of an axis keeps that value
    assert len(one_point) == len(cells) // 2 and {c.config.beta for c in one_point} == {0.05}


def test_narrowing_and_cell_ids_ignore_the_protocol_name(tmp_path: Path) -> None:
    a = plan(
        load_protocol(_proto(tmp_path, 'methods = ["nfad"]\n[datasets]\nsynthetic = "all"\n')), seeds=[0]
    )
    other = tmp_path / "other"
    other.mkdir()
    b = plan(
        load_protocol(_proto(other, 'methods = ["nfad", "bgad"]\n[datasets]\nsynthetic = "all"\n')),
        methods=["nfad"],
        seeds=[0],
    )
    assert [c.id for c in a] == [c.id for c in b]  # the same cell in two tables runs once
    assert [c.config.category for c in a] == ["weave", "widget"]


def test_selection_is_independent_of_run_order() -> None:
    data = load_category("synthetic", "weave")
    forward = [select_known_anomalies(data.test, 3, s, "weave")[0] for s in (0, 42, 100)]
    backward = [select_known_anomalies(list(reversed(data.test)), 3, s, "weave")[0] for s in (100, 42, 0)][
        ::-1
    ]
    assert forward == backward
    assert forward[0] != forward[1]


@pytest.mark.parametrize(
    ("kwargs", "error", "needle"),
    [
        ({"dataset": "mvtec"}, ConfigError, "synthetic"),
        ({"categories": ["zipper"]}, ConfigError, "weave"),
        ({"methods": ["bgadd"]}, UnknownNameError, "bgad"),
    ],
)
def test_bad_input_lists_valid_names(tmp_path: Path, kwargs: dict, error: type, needle: str) -> None:
    proto = load_protocol(_proto(tmp_path, 'methods = ["nfad"]\n[datasets]\nsynthetic = "all"\n'))
    with pytest.raises(error, match=needle):
        plan(proto, **kwargs)


def test_protocol_restricting_categories_refuses_others(tmp_path: Path) -> None:
    proto = load_protocol(_proto(tmp_path, 'methods = ["nfad"]\n[datasets]\nsynthetic = ["weave"]\n'))
    with pytest.raises(ConfigError, match="does not use category 'widget'"):
        plan(proto, categories=["widget"])


@pytest.mark.parametrize("protocol", ["one_class", "multi_class"])
def test_cells_planned_without_their_data_keep_distinct_ids(protocol: str, tmp_path: Path) -> None:
    """A dry run without the data: one id per distinct config (defect type, grid point), as with the data."""
    cells = plan(load_protocol(protocol), dataset="mvtec", data_root=tmp_path / "absent", require_data=False)
    assert all(c.data_sha256 is None for c in cells)
    distinct_configs = {(c.config.to_dict().items().__repr__()) for c in cells}
    assert len({c.id for c in cells}) == len(distinct_configs) == len(cells)


def test_the_weights_file_is_planned_into_the_cell_id(tmp_path: Path) -> None:
    proto = load_protocol(_proto(tmp_path, 'methods = ["padim"]\n[datasets]\nsynthetic = ["weave"]\n'))
    (tmp_path / "a.pth").write_bytes(b"weights A")
    (tmp_path / "b.pth").write_bytes(b"weights B")
    ids = [
        plan(proto, seeds=[0], overrides=weights)[0].id
        for weights in (
            {},
            {"backbone_weights": str(tmp_path / "a.pth")},
            {"backbone_weights": str(tmp_path / "b.pth")},
        )
    ]
    assert len(set(ids)) == 3
    with pytest.raises(ConfigError, match="--backbone-weights .* is a folder"):
        plan(proto, seeds=[0], overrides={"backbone_weights": str(tmp_path)})


@pytest.mark.parametrize("seed", [-1, 2**32])
def test_a_seed_out_of_range_names_the_option(tmp_path: Path, seed: int) -> None:
    proto = load_protocol(_proto(tmp_path, 'methods = ["padim"]\n[datasets]\nsynthetic = ["weave"]\n'))
    with pytest.raises(ConfigError, match=f"seed={seed} \\(--seed"):
        plan(proto, seeds=[seed])


@pytest.mark.parametrize(
    ("protocol", "cells_per_dataset"),
    [
        # 2 variants (10 and 1 known) × 6 methods × 3 seeds = 36 per category (MVTec: 15 categories)
        ("dra_general", {"aitex": 36, "elpv": 36, "brainmri": 36, "headct": 36, "mvtec": 15 * 36}),
        # × the seen types: AITEX's six of DRA, ELPV mono/poly, carpet 5 + metal_nut 4
        ("dra_hard", {"aitex": 6 * 36, "elpv": 2 * 36, "mvtec": 9 * 36}),
        ("one_anomaly", {"aitex": 18, "elpv": 18, "brainmri": 18, "headct": 18}),
    ],
)
def test_dra_protocols_expand_to_their_cells(protocol: str, cells_per_dataset: dict, tmp_path: Path) -> None:
    """Planned from the dataset facts (a dry run without the data): counts, both example counts, the
    draw rule, one cell per seen type (the hard setting), and distinct ids."""
    proto = load_protocol(protocol)
    counts = {}
    for dataset in proto.datasets:
        cells = plan(proto, dataset=dataset, data_root=tmp_path / "absent", require_data=False, profile="cpu")
        counts[dataset] = len(cells)
        assert len({c.id for c in cells}) == len(cells)
        assert {c.config.method for c in cells} == set(proto.methods)
        ks = {c.config.n_known_anomalies for c in cells}
        assert ks == ({1} if protocol == "one_anomaly" else {10, 1})
        rule = {c.config.anomaly_selection for c in cells}
        assert rule == {"one_class" if protocol == "dra_hard" else "multi_class"}
        if protocol == "dra_hard":
            seen = {(c.config.category, c.config.anomaly_defect_type) for c in cells}
            assert len(seen) == counts[dataset] // 36
            assert ("aitex", "crease") not in seen  # fewer than ten tiles: not a seen type in DRA
    assert counts == cells_per_dataset


def test_the_hard_setting_tests_only_unseen_types() -> None:
    """dra_hard's cells (one known anomaly: the widget has six of each type), on the synthetic widget:
    the known anomaly is of the seen type, and the test set keeps the normal images and every other
    type, never the seen one."""
    hard = load_protocol("dra_hard")
    proto = hard.model_copy(
        update={
            "datasets": {"synthetic": ("widget",)},
            "defect_types": {},
            "variants": tuple(v for v in hard.variants if v.name == "1 known"),
        }
    )
    cells = plan(proto, methods=["bgad"], seeds=[0])
    data = load_category("synthetic", "widget")
    assert sorted(c.config.anomaly_defect_type for c in cells) == sorted(data.defect_types)
    for cell in cells:
        cfg = cell.config
        known, test = select_known_anomalies(
            data.test,
            cfg.n_known_anomalies,
            cfg.seed,
            cfg.category,
            cfg.anomaly_selection,
            cfg.anomaly_defect_type,
        )
        assert len(known) == 1 and known[0].defect_type == cfg.anomaly_defect_type
        unseen = set(data.defect_types) - {cfg.anomaly_defect_type}
        assert {s.defect_type for s in test if s.is_anomalous} == unseen
        assert sum(not s.is_anomalous for s in test) == sum(not s.is_anomalous for s in data.test)


def test_listed_defect_types_narrow_the_expansion(tmp_path: Path) -> None:
    path = _proto(
        tmp_path,
        'methods = ["bgad"]\nexpand = "defect_types"\n[datasets]\nsynthetic = ["widget"]\n'
        '[defect_types]\nwidget = ["spot", "crack"]\n[settings]\nanomaly_selection = "one_class"\n',
    )
    cells = plan(load_protocol(path))
    assert [c.config.anomaly_defect_type for c in cells] == ["spot", "spot", "crack", "crack"]  # × 2 seeds
