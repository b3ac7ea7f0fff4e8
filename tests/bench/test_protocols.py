"""Every protocol file validates; misspelt keys and bad values are named with their file."""

from __future__ import annotations

from pathlib import Path

import pytest

from bgad.bench import protocols
from bgad.bench.config import ConfigError
from bgad.bench.method_registry import METHODS
from bgad.bench.protocols import defect_subsets, load_protocol, protocol_names
from bgad.bench.regress import tolerances

EXPECTED = {
    "multi_class",
    "one_class",
    "hard_subset",
    "unseen_subset",
    "one_anomaly",
    "ablation_boundary",
    "ablation_components",
    "ablation_semi_push_pull",
    "dra_general",
    "dra_hard",
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


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            BASE + '[[variants]]\nname = "a"\nsetings = {}\n',
            " [variants #1]: unknown key 'setings'; allowed: methods, name, settings",
        ),
        (
            BASE + '[[published]]\nsource = "s"\ntable = "t"\nsetting = "x"\nvarient = "a"\n',
            " [published #1]: unknown key 'varient'; allowed: methods, setting, source, table, variant",
        ),
        (BASE + '[subsets]\ntrian = "easy"\n', " [subsets]: unknown key 'trian'; allowed: 'train' or 'test'"),
        (
            BASE.replace('"all"', '"some"'),
            " [datasets]: synthetic = 'some': give \"all\" or a list of category names",
        ),
        (
            'description = "x"\nmethods = "bgad"\n[datasets]\nsynthetic = "all"\n',
            ": methods = 'bgad': Input should be a list",
        ),
        ('seeds = ["a"]\n' + BASE, " [seeds]: item #1 = 'a': Input should be a valid integer"),
    ],
    ids=[
        "variant-key",
        "published-key",
        "subsets-key",
        "datasets-value",
        "methods-not-a-list",
        "seed-not-a-number",
    ],
)
def test_bad_protocol_is_one_line_naming_file_table_and_key(tmp_path: Path, text: str, expected: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_protocol(path)
    assert str(err.value).startswith(f"{path}{expected}") and "\n" not in str(err.value)


def _shipped_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, text: str) -> None:
    """The protocols folder as installed, with ``name``.toml replaced by ``text``."""
    for source in protocols._protocol_dir().iterdir():
        if source.name.endswith(".toml"):
            (tmp_path / source.name).write_text(source.read_text())
    (tmp_path / f"{name}.toml").write_text(text)
    monkeypatch.setattr(protocols, "_protocol_dir", lambda: tmp_path)


def test_defect_subsets_file_forbids_unknown_keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _shipped_files(
        tmp_path,
        monkeypatch,
        "mvtec_defect_subsets",
        '[categories.carpet]\neasy = ["color"]\nhrad = ["cut"]\n',
    )
    with pytest.raises(ConfigError) as err:
        defect_subsets()
    assert str(err.value) == (
        "protocols/mvtec_defect_subsets.toml [categories.carpet]: missing key 'hard'; "
        "protocols/mvtec_defect_subsets.toml [categories.carpet]: unknown key 'hrad'; allowed: easy, hard"
    )


def test_regression_file_forbids_unknown_keys_and_needs_every_metric(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shipped = (protocols._protocol_dir() / "regression.toml").read_text()
    _shipped_files(
        tmp_path, monkeypatch, "regression", shipped.replace("image_auroc = 0.02", "image_aurco = 0.02")
    )
    with pytest.raises(ConfigError) as err:
        tolerances()
    assert str(err.value) == (
        "protocols/regression.toml [paper]: missing key 'image_auroc'; "
        "protocols/regression.toml [paper]: unknown key 'image_aurco'; allowed: image_auroc, pixel_auroc, pro, pro_paper"
    )


def test_shipped_data_files_validate() -> None:
    assert set(tolerances()) == {"paper", "expectations"}
    assert defect_subsets()["carpet"]["hard"] == ["thread"]


def test_dra_protocols_hold_both_example_counts_and_their_settings() -> None:
    """DRA's general and hard settings: a variant per number of known anomalies (its Table 1/2 column
    groups), multi-class vs one-class draws, the hard setting narrowed to DRA's six AITEX types."""
    general, hard = load_protocol("dra_general"), load_protocol("dra_hard")
    for proto in (general, hard):
        assert [(v.name, v.settings) for v in proto.variants] == [
            ("10 known", {"n_known_anomalies": 10}),
            ("1 known", {"n_known_anomalies": 1}),
        ]
        assert set(proto.methods) == {"bgad", "nfad", "patchcore", "padim", "devnet", "dra"}
        assert proto.metrics == ("image_auroc",) and proto.profile == "paper"
        assert {ref.source for ref in proto.published} == {"dra-cvpr2022", "ahl-cvpr2024"}
    assert general.settings == {"anomaly_selection": "multi_class"} and general.expand is None
    assert set(general.datasets) == {"aitex", "elpv", "brainmri", "headct", "mvtec"}
    assert general.datasets["mvtec"] is None  # all 15 categories
    assert hard.settings == {"anomaly_selection": "one_class"} and hard.expand == "defect_types"
    assert hard.datasets == {"aitex": None, "elpv": None, "mvtec": ("carpet", "metal_nut")}
    assert hard.defect_types == {
        "aitex": ("broken_end", "broken_pick", "cut_selvage", "fuzzyball", "nep", "weft_crack")
    }
    assert {"devnet", "dra"} <= set(load_protocol("one_anomaly").methods)  # Table 3 runs them too


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_published_references_point_at_printed_rows(name: str) -> None:
    """Every [[published]] entry names a table that exists, methods that table prints, and a setting
    printed there for the protocol's settings (else its columns and comparisons would stay empty)."""
    from bgad.bench.published import load_published

    proto = load_protocol(name)
    printed = load_published()
    for ref in proto.published:
        rows = printed[(printed["source"] == ref.source) & (printed["table"] == ref.table)]
        assert not rows.empty, f"{name}: {ref.source} {ref.table}"
        assert set(ref.methods or ()) <= set(rows["method"]), f"{name}: {ref.methods}"
        head = ref.setting.split("{", 1)[0]
        assert rows["setting"].str.startswith(head).any(), f"{name}: {ref.setting}"


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        (BASE + '[defect_types]\nweave = ["hole"]\n', 'needs expand = "defect_types"'),
        (
            'expand = "defect_types"\n' + BASE + '[defect_types]\nweave = ["hloe"]\n',
            "weave has no defect type(s) hloe",
        ),
        (
            'expand = "defect_types"\n' + BASE + '[defect_types]\ncarpet = ["cut"]\n',
            "'carpet' is no category",
        ),
        ('expand = "defect_types"\n' + BASE + "[defect_types]\nweave = []\n", "weave"),
    ],
    ids=["without-expand", "misspelt-type", "unknown-category", "empty"],
)
def test_bad_defect_types_name_the_file(tmp_path: Path, text: str, needle: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_protocol(path)
    assert needle in str(err.value) and "mine.toml" in str(err.value)
