"""Every protocol file validates; misspelt keys and bad values are named with their file."""

from __future__ import annotations

from pathlib import Path

import pytest

from bgad.bench.config import ConfigError
from bgad.bench.method_registry import METHODS
from bgad.bench.protocols import load_protocol, protocol_names

EXPECTED = {
    "multi_class",
    "one_class",
    "hard_subset",
    "unseen_subset",
    "one_anomaly",
    "ablation_boundary",
    "ablation_components",
    "ablation_semi_push_pull",
}


def test_every_protocol_of_the_paper_is_there() -> None:
    assert EXPECTED <= set(protocol_names())


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_protocol_validates_and_names_only_registered_methods(name: str) -> None:
    proto = load_protocol(name)
    methods = METHODS
    for method in proto.methods:
        assert method in methods, f"{name}: {method}"
    for variant in proto.variants:
        for method in variant.methods or ():
            assert method in proto.methods
    assert proto.seeds == (0, 42, 100)


def test_one_class_expands_by_defect_type_and_subsets_use_table7() -> None:
    assert load_protocol("one_class").expand == "defect_types"
    assert load_protocol("unseen_subset").subsets == {"train": "easy", "test": "hard"}
    assert load_protocol("ablation_boundary").grid == {"beta": (0.01, 0.05, 0.1), "tau": (0.1, 0.2, 0.3)}


def _write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "mine.toml"
    path.write_text(text)
    return str(path)


BASE = 'description = "x"\nmethods = ["bgad"]\n[datasets]\nsynthetic = "all"\n'


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ('description = "x"\nmethod = ["bgad"]\n[datasets]\nsynthetic = "all"\n', "'method'"),
        (BASE + "[settings]\nbeta_ = 0.1\n", "beta_"),
        (BASE + '[settings]\nbeta = "high"\n', "beta"),
        (BASE + "[grid]\ntau = []\n", "tau"),
        (BASE + '[[variants]]\nnam = "a"\n', "'nam'"),
        (BASE + '[subsets]\ntest = "medium"\n', "medium"),
        ('expand = "defects"\n' + BASE, "defects"),
        ('description = "x"\n[datasets]\nsynthetic = "all"\n', "methods"),
    ],
    ids=[
        "top-key",
        "setting-key",
        "setting-type",
        "empty-axis",
        "variant-key",
        "subset-value",
        "expand",
        "missing",
    ],
)
def test_bad_protocol_names_key_and_file(tmp_path: Path, text: str, needle: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_protocol(path)
    assert needle in str(err.value) and "mine.toml" in str(err.value)


def test_unknown_protocol_lists_known() -> None:
    with pytest.raises(ConfigError, match="one_class"):
        load_protocol("one_klass")
