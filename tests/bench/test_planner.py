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
