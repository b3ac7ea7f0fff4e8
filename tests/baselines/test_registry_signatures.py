"""A detector's constructor is its configuration (scikit-learn's rule), for every registered method.

Its keyword parameters are its method's typed settings (same names and defaults, nothing more but the
cell's seed, the device, the run settings that change how it computes and, for a method that fine-tunes
its own backbone, the cell's backbone settings); the registry builds it from
a resolved config by those names; the constructor builds and seeds nothing.
"""

from __future__ import annotations

import inspect

import pytest
import torch

from bgad.bench.config import RunConfig
from bgad.bench.method_registry import METHODS
from bgad.bench.params import RunSettings

METHOD_NAMES = METHODS.names()


@pytest.mark.parametrize("name", METHOD_NAMES)
def test_the_constructor_takes_exactly_the_methods_parameters(name: str) -> None:
    spec = METHODS.get(name)
    signature = inspect.signature(spec.detector_class()).parameters
    fields = spec.params.model_fields
    own_backbone = {"backbone", "random_weights"} if spec.inputs == "images" else set()
    extra = set(signature) - set(fields) - {"seed", "device"} - set(RunSettings.model_fields) - own_backbone
    assert not extra, f"{name}: constructor parameters that are no setting of {spec.params.__name__}: {extra}"
    missing = set(fields) - set(signature)
    assert not missing, f"{name}: settings of {spec.params.__name__} its constructor lacks: {missing}"
    assert {"seed", "device"} <= set(signature)
    for setting, field in fields.items():
        assert signature[setting].default == field.default, f"{name}: default of {setting}"
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in signature.values())


@pytest.mark.parametrize("name", METHOD_NAMES)
def test_build_passes_the_resolved_settings_and_builds_nothing(name: str) -> None:
    spec = METHODS.get(name)
    cfg = RunConfig.of(method=name, seed=7)
    before = torch.get_rng_state()
    detector = spec.build(cfg, "cpu")
    assert torch.equal(torch.get_rng_state(), before), "the constructor must not seed torch"
    assert detector.seed == 7 and detector.device == "cpu"
    for setting in spec.params.model_fields:
        assert getattr(detector, setting) == getattr(cfg, setting), setting
    fitted = [k for k in vars(detector) if k.endswith("_")]
    assert not fitted, f"fitted state created before fit: {fitted}"


def test_build_passes_overridden_settings_and_the_run_settings_a_detector_names() -> None:
    cfg = RunConfig.of(method="bgad", beta=0.05, fiber_size=128, shared_positions=False)
    detector = METHODS.get("bgad").build(cfg, torch.device("cpu"))
    assert (detector.beta, detector.fiber_size, detector.shared_positions) == (0.05, 128, False)
    assert detector.device == torch.device("cpu")


@pytest.mark.parametrize(
    "name", [n for n in METHOD_NAMES if hasattr(METHODS.get(n).detector_class(), "loss_class")]
)
def test_the_registry_hands_anomalies_to_the_flow_methods_whose_loss_learns_from_them(name: str) -> None:
    spec = METHODS.get(name)
    assert spec.detector_class().loss_class.uses_anomalies is spec.uses_anomalies
