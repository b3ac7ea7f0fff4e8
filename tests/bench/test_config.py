"""Tests for bgad.bench.config: built-in profiles, override coercion, errors that name the key and its
source, precedence (profile < method defaults < overrides) and the result hash."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from bgad.bench.config import (
    KNOWN_SETTINGS,
    ConfigError,
    RunConfig,
    describe_settings,
    load_profile,
    parse_set_options,
    profile_names,
    resolve_config,
)
from bgad.bench.method_registry import METHODS
from bgad.bench.planner import check_overrides_apply

# --------------------------------------------------------------------------------------------------
# profiles


def test_builtin_profiles_exist() -> None:
    assert {"quick", "paper"} <= set(profile_names())


@pytest.mark.parametrize("name", ["quick", "paper"])
def test_builtin_profiles_load_and_validate(name: str) -> None:
    settings = load_profile(name)
    assert settings  # non-empty
    cfg = resolve_config(name)
    assert cfg.profile == name
    for key, value in settings.items():
        assert getattr(cfg, key) == value, key


def test_paper_profile_is_the_paper_setting() -> None:
    cfg = resolve_config("paper")
    assert cfg.backbone == "tf_efficientnet_b6"
    assert cfg.input_size == 256
    assert (cfg.meta_epochs, cfg.sub_epochs) == (25, 8)
    assert cfg.fiber_size == 4096
    assert cfg.batch_size == 32
    assert cfg.lr == 2e-4
    assert (cfg.phase1_epochs, cfg.warmup_epochs) == (1, 2)
    assert (cfg.n_blocks, cfg.clamp) == (8, 1.9)
    assert (cfg.beta, cfg.tau, cfg.normalizer, cfg.lam) == (0.01, 0.1, 10.0, 1.0)
    assert cfg.n_known_anomalies == 10 and cfg.repeats == 5 and cfg.racp and cfg.racp_per_anomaly == 5
    assert cfg.focal is True and cfg.focal_clip is None and cfg.spp_variant == "code"


def test_quick_profile_uses_offline_backbone() -> None:
    cfg = resolve_config("quick")
    assert cfg.backbone == "tf_efficientnet_lite0"
    assert cfg.meta_epochs < 25


def test_unknown_profile_lists_the_known_ones() -> None:
    with pytest.raises(ConfigError, match="quick") as err:
        load_profile("papr")
    assert "papr" in str(err.value) and "paper" in str(err.value)


def test_profile_file_with_misspelt_key(tmp_path: Path) -> None:
    path = tmp_path / "mine.toml"
    path.write_text('description = "x"\n[settings]\nmeta_epoch = 3\n')
    with pytest.raises(ConfigError) as err:
        load_profile(str(path))
    assert "meta_epoch" in str(err.value)
    assert str(path) in str(err.value)
    with pytest.raises(ConfigError, match="meta_epoch"):
        resolve_config(str(path))


def test_profile_file_with_bad_value_and_bad_top_level(tmp_path: Path) -> None:
    bad_value = tmp_path / "bad_value.toml"
    bad_value.write_text('[settings]\nmeta_epochs = "many"\n')
    with pytest.raises(ConfigError, match="meta_epochs") as err:
        load_profile(str(bad_value))
    assert str(bad_value) in str(err.value)
    bad_top = tmp_path / "bad_top.toml"
    bad_top.write_text("[setting]\nmeta_epochs = 3\n")
    with pytest.raises(ConfigError, match="setting") as err:
        load_profile(str(bad_top))
    assert str(bad_top) in str(err.value)
    broken = tmp_path / "broken.toml"
    broken.write_text("[settings\n")
    with pytest.raises(ConfigError, match="broken.toml"):
        load_profile(str(broken))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('descripton = "x"\n', "unknown key 'descripton'; allowed: description, methods, settings"),
        ("description = 3\n", "description = 3: Input should be a valid string"),
        ("settings = 3\n", "settings = 3: Input should be a valid dictionary"),
    ],
    ids=["misspelt-top-key", "description-not-text", "settings-not-a-table"],
)
def test_profile_file_is_validated_by_its_model(tmp_path: Path, text: str, expected: str) -> None:
    """One line that names the file and the key, for every key of the file (not only settings)."""
    path = tmp_path / "mine.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_profile(str(path))
    assert str(err.value) == f"{path}: {expected}"


def test_parameter_models_come_from_the_method_registry(tmp_path: Path) -> None:
    """A method registered with a model of its own makes its parameters settings, with no second list
    to update (a fresh interpreter: the registry is complete when the config module is imported)."""
    script = tmp_path / "toy.py"
    script.write_text(
        textwrap.dedent(
            """
            from pydantic import Field
            from bgad.bench.method_registry import METHODS, MethodSpec
            from bgad.bench.params import Settings

            class ToyParams(Settings):
                toy_knob: int = Field(3, ge=1)

            METHODS.register("toy", MethodSpec(
                name="toy", label="Toy", description="a toy", params=ToyParams, detector="toy:Toy"
            ))
            from bgad.bench.config import PARAMETER_MODELS, RunConfig

            assert ToyParams in PARAMETER_MODELS
            print(RunConfig.of(method="toy", toy_knob=5).toy_knob)
            """
        )
    )
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "5"


def test_profile_from_file_takes_its_stem_as_name(tmp_path: Path) -> None:
    path = tmp_path / "tiny.toml"
    path.write_text("[settings]\nmeta_epochs = 2\nfocal_clip = 50.0\n")
    cfg = resolve_config(str(path))
    assert cfg.profile == "tiny"
    assert cfg.meta_epochs == 2 and cfg.focal_clip == 50.0


# --------------------------------------------------------------------------------------------------
# overrides


@pytest.mark.parametrize(
    ("key", "text", "expected"),
    [
        ("meta_epochs", "3", 3),
        ("meta_epochs", " 7 ", 7),
        ("meta_epochs", "3.0", 3),
        ("lr", "1e-3", 1e-3),
        ("lr", "0.5", 0.5),
        ("focal", "true", True),
        ("focal", "False", False),
        ("racp", "0", False),
        ("racp", "yes", True),
        ("balanced_sampler", "on", True),
        ("focal_clip", "none", None),
        ("focal_clip", "None", None),
        ("focal_clip", "50", 50.0),
        ("anomaly_defect_type", "none", None),
        ("anomaly_defect_type", "hole", "hole"),
        ("data_root", "null", None),
        ("category", "carpet", "carpet"),
    ],
)
def test_overrides_are_coerced(key: str, text: str, expected: object) -> None:
    cfg = RunConfig.of().with_overrides({key: text})
    value = getattr(cfg, key)
    assert value == expected
    assert type(value) is type(expected)


@pytest.mark.parametrize(
    ("key", "text"),
    [
        ("meta_epochs", "three"),
        ("meta_epochs", "3.5"),
        ("meta_epochs", "none"),  # not optional
        ("focal", "maybe"),
        ("lr", "fast"),
        ("focal_clip", "big"),
    ],
)
def test_bad_override_values_name_key_and_source(key: str, text: str) -> None:
    with pytest.raises(ConfigError) as err:
        RunConfig.of().with_overrides({key: text}, source="--set")
    assert key in str(err.value) and "--set" in str(err.value)


def test_unknown_override_key_names_key_and_source() -> None:
    with pytest.raises(ConfigError) as err:
        RunConfig.of().with_overrides({"metaepochs": "3"}, source="command line")
    msg = str(err.value)
    assert "metaepochs" in msg and "command line" in msg
    assert "meta_epochs" in msg  # the known settings are listed
    with pytest.raises(ConfigError, match="command line"):
        resolve_config("quick", {"betta": "0.1"})


def test_parse_set_options() -> None:
    assert parse_set_options(["a=1", "b = x=y", "c="]) == {"a": "1", "b": " x=y", "c": ""}
    with pytest.raises(ConfigError, match="novalue"):
        parse_set_options(["novalue"])


# --------------------------------------------------------------------------------------------------
# precedence


def test_precedence_profile_then_method_defaults_then_overrides(tmp_path: Path) -> None:
    path = tmp_path / "prof.toml"
    path.write_text("[settings]\nmeta_epochs = 6\nsub_epochs = 2\nfiber_size = 4096\nbeta = 0.05\n")
    cfg = resolve_config(str(path), {"meta_epochs": "2"}, [("plan", {"method": "cflow"})])
    assert cfg.meta_epochs == 2  # override beats profile
    assert cfg.fiber_size == 256  # method default beats profile
    assert cfg.backbone == "wide_resnet50_2"
    assert cfg.sub_epochs == 2 and cfg.beta == 0.05  # profile beats dataclass default
    assert cfg.tau == RunConfig.of().tau  # dataclass default where nobody says anything


def test_a_profiles_method_table_beats_its_shared_settings_and_loses_to_the_command_line(
    tmp_path: Path,
) -> None:
    """``[methods.devnet]`` gives DevNet its own batch under the flows' setting name; others keep theirs."""
    path = tmp_path / "prof.toml"
    path.write_text(
        "[settings]\nbatch_size = 32\nlr = 1e-3\ninput_size = 128\n"
        "[methods.devnet]\nbatch_size = 16\ninput_size = 96\nepochs = 3\n"
    )
    devnet = resolve_config(str(path), layers=[("plan", {"method": "devnet"})])
    assert (devnet.batch_size, devnet.lr, devnet.input_size, devnet.epochs) == (16, 1e-3, 96, 3)
    assert resolve_config(str(path), {"batch_size": "8"}, [("plan", {"method": "devnet"})]).batch_size == 8
    bgad = resolve_config(str(path), layers=[("plan", {"method": "bgad"})])
    assert (bgad.batch_size, bgad.input_size) == (32, 128)
    assert (
        devnet.result_hash()
        != resolve_config(str(path), {"batch_size": "32"}, [("plan", {"method": "devnet"})]).result_hash()
    )


@pytest.mark.parametrize(
    ("table", "expected"),
    [
        ("[methods.devnett]\nepochs = 3\n", "[methods.devnett]: unknown method; registered: "),
        (
            "[methods.devnet]\nfiber_size = 3\n",
            "[methods.devnet]: 'fiber_size' is not a setting of method 'devnet'",
        ),
        ("[methods.dra]\nepochs = 0\n", "epochs"),
        ("[methods.dra]\nseed = 3\n", "use --seed"),
    ],
    ids=["unknown-method", "other-methods-setting", "bad-value", "axis"],
)
def test_a_profiles_method_table_is_checked_against_that_method(
    tmp_path: Path, table: str, expected: str
) -> None:
    path = tmp_path / "prof.toml"
    path.write_text("[settings]\nlr = 1e-3\n" + table)
    with pytest.raises(ConfigError) as err:
        load_profile(str(path))
    assert expected in str(err.value) and str(path) in str(err.value)


def test_every_method_default_is_a_valid_setting() -> None:
    for name in METHODS.names():
        cfg = resolve_config("quick", layers=[("plan", {"method": name})])
        for key, value in METHODS.get(name).defaults.items():
            assert getattr(cfg, key) == value, (name, key)


@pytest.mark.parametrize(
    ("key", "value", "allowed"),
    [
        ("sub_epochs", "0", "greater than or equal to 1"),
        ("batch_size", "0", "greater than or equal to 1"),
        ("eval_every", "0", "greater than or equal to 1"),
        ("input_size", "0", "greater than or equal to 32"),
        ("input_size", "100", "multiple of 32"),
        ("n_blocks", "0", "greater than or equal to 1"),
        ("threads", "0", "greater than or equal to 1"),
        ("meta_epochs", "0", "greater than or equal to 1"),
        ("n_known_anomalies", "-1", "greater than or equal to 0"),
        ("feature_dtype", "float64", "float32"),
        ("spp_variant", "bogus", "'code' or 'paper'"),
        ("beta", "1.5", "less than 1"),
    ],
)
def test_out_of_range_values_are_rejected_with_the_range(key: str, value: str, allowed: str) -> None:
    with pytest.raises(ConfigError) as err:
        resolve_config("quick", {key: value})
    message = str(err.value)
    assert f"{key}=" in message and allowed in message and "--set" in message


def test_rules_between_settings_name_their_source(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="warmup_epochs=1 exceeds meta_epochs=0|greater than or equal to 1"):
        resolve_config("quick", {"meta_epochs": "0"})
    with pytest.raises(ConfigError, match="phase1_epochs=2 exceeds meta_epochs=1"):
        resolve_config("quick", {"meta_epochs": "1", "phase1_epochs": "2"})


@pytest.mark.parametrize("key", ["profile", "dataset", "method", "category", "seed"])
def test_plan_axes_cannot_be_set(key: str) -> None:
    with pytest.raises(ConfigError, match=f"use --{key}"):
        resolve_config("quick", {key: "paper"})


def test_a_method_has_only_its_own_parameters() -> None:
    padim = resolve_config("quick", layers=[("plan", {"method": "padim"})])
    assert padim.padim_channels == 100
    with pytest.raises(AttributeError, match="not a setting of method 'padim'"):
        _ = padim.lr
    assert "lr" not in padim.to_dict() and "meta_epochs" not in padim.to_dict()
    bgad = resolve_config("quick")
    with pytest.raises(AttributeError):
        _ = bgad.coreset_ratio


def test_overrides_must_apply_to_a_planned_method() -> None:
    check_overrides_apply({"lr": "1e-3", "threads": "1"}, ["bgad", "padim"])
    with pytest.raises(ConfigError, match="belongs to"):
        check_overrides_apply({"lr": "1e-3"}, ["padim"])


def test_every_setting_is_described() -> None:
    rows = describe_settings()
    assert {r["name"] for r in rows} == set(KNOWN_SETTINGS)
    assert all(r["description"] for r in rows)


# --------------------------------------------------------------------------------------------------
# result hash


def test_result_hash_is_stable_and_sensitive() -> None:
    base = RunConfig.of()
    assert base.result_hash() == RunConfig.of().result_hash()
    assert len(base.result_hash()) == 16
    for key, value in [("beta", 0.05), ("seed", 1), ("focal", False), ("backbone", "tf_efficientnet_b6")]:
        assert base.with_overrides({key: value}).result_hash() != base.result_hash(), key


def test_result_hash_ignores_paths_threads_and_device() -> None:
    base = RunConfig.of()
    same = base.with_overrides({"data_root": "/somewhere/else", "threads": "16", "device": "cpu"})
    assert same.result_hash() == base.result_hash()
    assert same.to_dict() != base.to_dict()


def test_the_largest_seed_is_one_every_flow_can_be_seeded_with() -> None:
    """A seed past numpy's range would pass the plan and fail in every cell (and its retry)."""
    import numpy as np

    from bgad.bench.params import MAX_SEED

    np.random.seed(MAX_SEED * 1000 + 999)  # bgad.flow_detector seeds flow i with seed × 1000 + i
    assert RunConfig.of(seed=MAX_SEED).seed == MAX_SEED
    with pytest.raises(ConfigError, match=f"seed={MAX_SEED + 1}.*less than or equal to {MAX_SEED}"):
        RunConfig.of(seed=MAX_SEED + 1)


def test_dras_cutmix_area_takes_the_text_form_reports_print() -> None:
    cfg = resolve_config("quick", {"cutmix_area": "0.05/0.2"}, [("plan", {"method": "dra"})])
    assert cfg.cutmix_area == (0.05, 0.2)
    with pytest.raises(ConfigError, match="cutmix_area"):
        resolve_config("quick", {"cutmix_area": "0.2/0.05"}, [("plan", {"method": "dra"})])


def test_describe_merges_only_settings_of_one_declaration() -> None:
    """DevNet's and DRA's shared training is one row; the flows' ``lr`` and theirs stay apart."""
    from bgad.bench.config import describe_settings

    rows = {(r["name"], r["methods"]) for r in describe_settings()}
    assert ("margin", "devnet, dra") in rows
    lr = sorted(m for name, m in rows if name == "lr")
    assert lr == ["bgad, bgad_cc, bgad_wo, cflow, nfad", "devnet, dra"]
    assert {m for name, m in rows if name == "epochs"} == {"devnet", "dra"}  # 50 and 30: two rows
