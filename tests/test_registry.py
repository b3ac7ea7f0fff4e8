"""Tests for bgad.registry.Registry: registration, duplicates, and helpful unknown-name errors."""

from __future__ import annotations

import pytest

from bgad.registry import Registry, UnknownNameError


def test_register_bare_and_as_decorator() -> None:
    reg: Registry[object] = Registry("widget")
    a = object()
    assert reg.register("alpha", a) is a

    @reg.register("beta")
    def beta() -> None:
        return None

    assert reg.get("alpha") is a and reg.get("beta") is beta
    assert reg.names() == ["alpha", "beta"] and list(reg) == ["alpha", "beta"]
    assert "alpha" in reg and "gamma" not in reg


def test_duplicate_registration_is_an_error() -> None:
    reg: Registry[object] = Registry("widget")
    a = object()
    reg.register("alpha", a)
    reg.register("alpha", a)  # the same object again is harmless (re-import)
    with pytest.raises(ValueError, match="widget 'alpha' is already registered"):
        reg.register("alpha", object())
    assert reg.get("alpha") is a


def test_unknown_name_suggests_the_closest_and_lists_all() -> None:
    reg: Registry[int] = Registry("backbone")
    for i, name in enumerate(["tf_efficientnet_b6", "tf_efficientnet_lite0", "wide_resnet50_2"]):
        reg.register(name, i)
    with pytest.raises(UnknownNameError) as err:
        reg.get("wide_resnet50")
    msg = str(err.value)
    assert "Did you mean 'wide_resnet50_2'?" in msg
    assert "unknown backbone 'wide_resnet50'" in msg
    assert "tf_efficientnet_b6, tf_efficientnet_lite0, wide_resnet50_2" in msg
    assert isinstance(err.value, KeyError)
    assert not msg.startswith('"')  # plain message, not KeyError's quoted repr


def test_unknown_name_without_close_match() -> None:
    reg: Registry[int] = Registry("method")
    reg.register("bgad", 1)
    with pytest.raises(UnknownNameError) as err:
        reg.get("zzzzzz")
    assert "Did you mean" not in str(err.value)
    assert "bgad" in str(err.value)
