"""Tests for bgad.losses against hand-computed values (docs/method.md §3), and the loss objects.

The hand-made chunk used throughout (ν = 10, β = 0.25, τ = 0.1):
  normal ℓ    = -8, -3, 2, 5     -> u = -0.8, -0.3, 0.2, 0.5; b_n = ℓ_(1)/ν = -0.3 (⌊0.25·4⌋ = 1)
  anomalous ℓ = -6, -3.5, 1, 3   -> u = -0.6, -0.35, 0.1, 0.3; b_a = -0.4
  pulled normals (u ≤ b_n): -0.8, -0.3 ; pushed anomalies (u ≥ b_a): -0.35, 0.1, 0.3
Normal and anomalous locations are interleaved in the tensor.
"""

from __future__ import annotations

import math

import pytest
import torch

from bgad.bench.params import FlowParams
from bgad.loss_settings import BoundaryLossSettings
from bgad.losses import (
    BoundaryGuided,
    MaximumLikelihood,
    PushPullAll,
    SemiPull,
    anomalous_focal_weight,
    ml_loss,
    normal_boundary,
    normal_focal_weight,
    semi_push_pull,
    weighted_ml,
)

NU = 10.0
LL = [-8.0, -6.0, -3.0, -3.5, 2.0, 1.0, 5.0, 3.0]
LABELS = [0, 1, 0, 1, 0, 1, 0, 1]
B_N = -0.3
B_A = -0.4


def _softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def _wn(u: float) -> float:
    return 1.0 if u > -0.2 else 11.7 * math.sqrt(1 - math.exp(u)) * abs(u)


def _wa(u: float) -> float:
    return 1.0 if u <= -1 else 0.53 * (1 + math.exp(u)) ** 2 / max(abs(u), 1e-6)


def _chunk() -> tuple[torch.Tensor, torch.Tensor]:
    return torch.tensor(LL, dtype=torch.float64, requires_grad=True), torch.tensor(LABELS)


def _expected_terms(focal: bool, b_n: float = B_N, tau: float = 0.1) -> dict[str, float]:
    """L_ml, L_n, L_a (means) and the pull/push sets, computed with plain Python."""
    b_a = b_n - tau
    wn = _wn if focal else (lambda u: 1.0)
    wa = _wa if focal else (lambda u: 1.0)
    normals = [ll for ll, lab in zip(LL, LABELS, strict=True) if lab == 0]
    anomalies = [ll for ll, lab in zip(LL, LABELS, strict=True) if lab == 1]
    l_ml = sum(wn(ll / NU) * _softplus(-ll) for ll in normals) / len(normals)
    pull = [ll for ll in normals if ll / NU <= b_n]
    push = [ll for ll in anomalies if ll / NU >= b_a]
    pull_terms = [wn(ll / NU) * (b_n - ll / NU) for ll in pull]
    push_terms = [wa(ll / NU) * (ll / NU - b_a) for ll in push]
    return {
        "ml": l_ml,
        "n_mean": sum(pull_terms) / len(pull_terms) if pull_terms else 0.0,
        "a_mean": sum(push_terms) / len(push_terms) if push_terms else 0.0,
        "n_sum": sum(pull_terms),
        "a_sum": sum(push_terms),
        "pull": pull,
        "push": push,
    }


def _cfg(**kw) -> BoundaryLossSettings:
    base = {"beta": 0.25, "tau": 0.1, "normalizer": NU, "lam": 1.0, "focal": False}
    base.update(kw)
    return BoundaryLossSettings(**base)


# --------------------------------------------------------------------------------------------------
# focal weights


def test_normal_focal_weight_values() -> None:
    u = torch.tensor([-0.1, -0.5, 0.0, 0.7, -0.19, -0.2, -3.0], dtype=torch.float64)
    w = normal_focal_weight(u)
    expected = [
        1.0,
        11.7 * math.sqrt(1 - math.exp(-0.5)) * 0.5,
        1.0,
        1.0,
        1.0,
        11.7 * math.sqrt(1 - math.exp(-0.2)) * 0.2,  # u = -0.2 is not > -0.2
        11.7 * math.sqrt(1 - math.exp(-3.0)) * 3.0,
    ]
    assert w.tolist() == pytest.approx(expected, rel=1e-12)


def test_anomalous_focal_weight_values() -> None:
    u = torch.tensor([-1.5, -1.0, -0.5, 0.5, -0.999], dtype=torch.float64)
    w = anomalous_focal_weight(u)
    expected = [
        1.0,
        1.0,  # u ≤ -1
        0.53 * (1 + math.exp(-0.5)) ** 2 / 0.5,
        0.53 * (1 + math.exp(0.5)) ** 2 / 0.5,
        0.53 * (1 + math.exp(-0.999)) ** 2 / 0.999,
    ]
    assert w.tolist() == pytest.approx(expected, rel=1e-12)


def test_anomalous_focal_weight_at_zero_is_finite_and_large() -> None:
    w = anomalous_focal_weight(torch.tensor([0.0, 1e-9, -1e-9], dtype=torch.float64))
    assert torch.isfinite(w).all()
    expected_zero = 0.53 * 4 / 1e-6  # |u| floored at 1e-6
    assert w[0].item() == pytest.approx(expected_zero, rel=1e-12)
    assert w[1].item() == pytest.approx(0.53 * (1 + math.exp(1e-9)) ** 2 / 1e-6, rel=1e-9)
    assert w[2].item() == pytest.approx(0.53 * (1 + math.exp(-1e-9)) ** 2 / 1e-6, rel=1e-9)
    # float32 as well (training dtype)
    assert torch.isfinite(anomalous_focal_weight(torch.zeros(3))).all()


def test_anomalous_focal_weight_clip() -> None:
    u = torch.tensor([-1.5, -0.5, -0.01, 0.0], dtype=torch.float64)
    clipped = anomalous_focal_weight(u, clip=5.0)
    unclipped = anomalous_focal_weight(u)
    expected = [min(v, 5.0) for v in unclipped.tolist()]
    assert clipped.tolist() == pytest.approx(expected, rel=1e-12)
    assert clipped.max().item() == 5.0
    assert unclipped.max().item() > 1e5  # default: no clip (faithful)
    assert BoundaryLossSettings().focal_clip is None


# --------------------------------------------------------------------------------------------------
# boundary


@pytest.mark.parametrize(("beta", "k"), [(0.0, 0), (0.01, 1), (0.05, 5), (0.5, 50), (0.999, 99)])
def test_normal_boundary_is_floor_beta_n_th_smallest_over_nu(beta: float, k: int) -> None:
    gen = torch.Generator().manual_seed(0)
    values = torch.arange(100, dtype=torch.float64) * 0.5 - 20.0  # sorted value at index i: 0.5 i - 20
    shuffled = values[torch.randperm(100, generator=gen)]
    b = normal_boundary(shuffled, beta, NU)
    assert b.item() == pytest.approx((0.5 * k - 20.0) / NU, abs=1e-12)


def test_normal_boundary_small_set_and_errors() -> None:
    ll = torch.tensor([3.0, -1.0, 7.0])
    assert normal_boundary(ll, 0.01, 10.0).item() == pytest.approx(-0.1)  # ⌊0.03⌋ = 0 -> min
    assert normal_boundary(ll, 0.34, 10.0).item() == pytest.approx(0.3)  # ⌊1.02⌋ = 1
    with pytest.raises(ValueError, match="at least one normal"):
        normal_boundary(torch.tensor([]), 0.01, 10.0)


def test_normal_boundary_is_detached() -> None:
    ll = torch.tensor([1.0, 2.0, 3.0], requires_grad=True)
    assert not normal_boundary(ll, 0.5, 10.0).requires_grad


# --------------------------------------------------------------------------------------------------
# semi-push-pull


def test_hand_chunk_sets() -> None:
    exp = _expected_terms(focal=False)
    assert exp["pull"] == [-8.0, -3.0]
    assert exp["push"] == [-3.5, 1.0, 3.0]


@pytest.mark.parametrize("focal", [False, True])
@pytest.mark.parametrize("lam", [1.0, 0.5])
def test_semi_push_pull_hand_chunk(focal: bool, lam: float) -> None:
    ll, labels = _chunk()
    loss = semi_push_pull(ll, labels, _cfg(focal=focal, lam=lam))
    exp = _expected_terms(focal)
    assert loss.item() == pytest.approx(exp["ml"] + lam * (exp["n_mean"] + exp["a_mean"]), rel=1e-12)


def test_semi_push_pull_hand_numbers_focal_off() -> None:
    """The same numbers written out fully, as a guard against a mistake in the helper."""
    ll, labels = _chunk()
    l_ml = (_softplus(8) + _softplus(3) + _softplus(-2) + _softplus(-5)) / 4
    l_n = ((-0.3 - -0.8) + 0.0) / 2
    l_a = ((-0.35 - -0.4) + (0.1 - -0.4) + (0.3 - -0.4)) / 3
    loss = semi_push_pull(ll, labels, _cfg())
    assert loss.item() == pytest.approx(l_ml + l_n + l_a, rel=1e-12)


@pytest.mark.parametrize("focal", [False, True])
def test_push_false_drops_anomalous_term(focal: bool) -> None:
    ll, labels = _chunk()
    loss = semi_push_pull(ll, labels, _cfg(focal=focal), push=False)
    exp = _expected_terms(focal)
    assert loss.item() == pytest.approx(exp["ml"] + exp["n_mean"], rel=1e-12)


@pytest.mark.parametrize("focal", [False, True])
def test_empty_anomalous_set_gives_no_nan(focal: bool) -> None:
    ll = torch.tensor([-8.0, -3.0, 2.0, 5.0], dtype=torch.float64, requires_grad=True)
    labels = torch.zeros(4, dtype=torch.long)
    loss = semi_push_pull(ll, labels, _cfg(focal=focal))
    assert torch.isfinite(loss)
    exp = _expected_terms(focal)
    assert loss.item() == pytest.approx(exp["ml"] + exp["n_mean"], rel=1e-12)
    loss.backward()
    assert torch.isfinite(ll.grad).all()


def test_no_anomaly_above_b_a_gives_no_nan() -> None:
    """Anomalies exist but none is above b_a: the push set is empty and contributes 0."""
    ll = torch.tensor([-8.0, -3.0, 2.0, 5.0, -9.0, -20.0], dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([0, 0, 0, 0, 1, 1])
    loss = semi_push_pull(ll, labels, _cfg())
    exp = _expected_terms(False)
    assert loss.item() == pytest.approx(exp["ml"] + exp["n_mean"], rel=1e-12)
    loss.backward()
    assert ll.grad[4:].abs().max().item() == 0.0


def test_only_anomalous_locations_are_pushed() -> None:
    """A normal location above b_a is never pushed; an anomalous location never gets an ML term."""
    ll, labels = _chunk()
    loss_all = semi_push_pull(ll, labels, _cfg())
    # an anomaly below b_a (ℓ = -6) enters no term: moving it further down changes nothing
    ll2 = ll.detach().clone()
    ll2[1] = -60.0
    assert semi_push_pull(ll2, labels, _cfg()).item() == pytest.approx(loss_all.item(), rel=1e-12)
    # normals above b_a (ℓ = 2, 5; u ≥ b_a) get only the ML gradient, no push; the normal at ℓ = -3 also
    # lies above b_a and its exact gradient (ML + pull only) is checked in the gradient test below
    loss_all.backward()
    for i in (4, 6):
        assert ll.grad[i].item() == pytest.approx(-_sigmoid(-LL[i]) / 4, rel=1e-12)


def test_chunk_without_normals_needs_a_boundary() -> None:
    ll = torch.tensor([1.0, 2.0], dtype=torch.float64)
    labels = torch.ones(2, dtype=torch.long)
    with pytest.raises(ValueError, match="normal"):
        semi_push_pull(ll, labels, _cfg())
    # with an external boundary: no ML, no pull, only push
    loss = semi_push_pull(ll, labels, _cfg(), b_n=torch.tensor(0.05, dtype=torch.float64))
    assert loss.item() == pytest.approx(((0.1 + 0.05) + (0.2 + 0.05)) / 2, rel=1e-12)


@pytest.mark.parametrize("focal", [False, True])
def test_gradient_treats_boundaries_and_weights_as_constants(focal: bool) -> None:
    lam = 0.7
    ll, labels = _chunk()
    semi_push_pull(ll, labels, _cfg(focal=focal, lam=lam)).backward()
    wn = _wn if focal else (lambda u: 1.0)
    wa = _wa if focal else (lambda u: 1.0)
    exp = _expected_terms(focal)
    n_normal = LABELS.count(0)
    expected = []
    for value, lab in zip(LL, LABELS, strict=True):
        u = value / NU
        if lab == 0:
            g = -wn(u) * _sigmoid(-value) / n_normal  # d softplus(-ℓ)/dℓ = -σ(-ℓ)
            if value in exp["pull"]:
                g += lam * (-wn(u) / NU) / len(exp["pull"])
        else:
            g = lam * (wa(u) / NU) / len(exp["push"]) if value in exp["push"] else 0.0
        expected.append(g)
    assert ll.grad.tolist() == pytest.approx(expected, rel=1e-10, abs=1e-14)


def test_paper_variant_sums_boundary_terms() -> None:
    ll, labels = _chunk()
    b_n = torch.tensor(-0.45, dtype=torch.float64)  # a batch-level boundary handed in
    for focal in (False, True):
        loss = semi_push_pull(ll, labels, _cfg(focal=focal, spp_variant="paper"), b_n=b_n)
        exp = _expected_terms(focal, b_n=-0.45)
        assert exp["pull"] == [-8.0] and exp["push"] == [-3.5, 1.0, 3.0]
        assert loss.item() == pytest.approx(exp["ml"] + exp["n_sum"] + exp["a_sum"], rel=1e-12)
        # and the code variant with the same boundary takes means
        loss_code = semi_push_pull(ll, labels, _cfg(focal=focal), b_n=b_n)
        assert loss_code.item() == pytest.approx(exp["ml"] + exp["n_mean"] + exp["a_mean"], rel=1e-12)
    # the paper variant with the chunk's own boundary also sums
    loss = semi_push_pull(ll, labels, _cfg(spp_variant="paper"))
    exp = _expected_terms(False)
    assert loss.item() == pytest.approx(exp["ml"] + exp["n_sum"] + exp["a_sum"], rel=1e-12)


def test_weighted_ml() -> None:
    ll = torch.tensor([-8.0, -3.0, 2.0, 5.0], dtype=torch.float64)
    plain = sum(_softplus(-v) for v in ll.tolist()) / 4
    assert weighted_ml(ll, _cfg(focal=False)).item() == pytest.approx(plain, rel=1e-12)
    focal = sum(_wn(v / NU) * _softplus(-v) for v in ll.tolist()) / 4
    assert weighted_ml(ll, _cfg(focal=True)).item() == pytest.approx(focal, rel=1e-12)
    assert ml_loss(ll).tolist() == pytest.approx([_softplus(-v) for v in ll.tolist()], rel=1e-12)


def test_default_config_is_cvpr_code() -> None:
    cfg = BoundaryLossSettings()
    assert (cfg.beta, cfg.tau, cfg.normalizer, cfg.lam, cfg.focal, cfg.spp_variant) == (
        0.01,
        0.1,
        10.0,
        1.0,
        True,
        "code",
    )


# --------------------------------------------------------------------------------------------------
# the loss objects


def test_the_flow_settings_inherit_the_loss_settings_declared_once() -> None:
    """One definition of β, τ, ν, λ and the focal weighting: FlowParams' fields are the loss's own."""
    assert issubclass(FlowParams, BoundaryLossSettings)
    for name, field in BoundaryLossSettings.model_fields.items():
        assert repr(FlowParams.model_fields[name]) == repr(field), name
    params = FlowParams(beta=0.05, focal_clip=3.0)
    loss = BoundaryGuided.from_settings(params)
    assert (loss.beta, loss.focal_clip, loss.tau) == (0.05, 3.0, params.tau)


@pytest.mark.parametrize(
    ("loss_class", "push", "semi"),
    [(BoundaryGuided, True, True), (SemiPull, False, True), (PushPullAll, True, False)],
)
def test_each_boundary_loss_is_semi_push_pull_with_its_switches(loss_class, push: bool, semi: bool) -> None:
    ll, labels = _chunk()
    loss = loss_class(**_cfg(focal=True).model_dump())
    expected = semi_push_pull(ll, labels, _cfg(focal=True), push=push, semi=semi)
    assert loss(ll, labels).item() == expected.item()
    assert loss.guided and loss.uses_anomalies is push


@pytest.mark.parametrize("loss_class", [BoundaryGuided, PushPullAll])
def test_a_pushing_loss_on_a_chunk_without_anomalies_is_weighted_ml(loss_class) -> None:
    ll = torch.tensor([-8.0, -3.0, 2.0, 5.0], dtype=torch.float64)
    labels = torch.zeros(4, dtype=torch.long)
    settings = _cfg(focal=True)
    assert loss_class(**settings.model_dump())(ll, labels).item() == weighted_ml(ll, settings).item()
    pull_only = SemiPull(**settings.model_dump())(ll, labels)  # BGAD w/o still pulls below b_n
    assert pull_only.item() == semi_push_pull(ll, labels, settings, push=False).item()


def test_maximum_likelihood_has_no_second_phase() -> None:
    ll, labels = _chunk()
    loss = MaximumLikelihood.from_settings(FlowParams())
    assert not loss.guided and not loss.uses_anomalies and not loss.batch_boundary
    assert loss(ll, labels).item() == ml_loss(ll).mean().item()


def test_only_the_paper_variant_takes_the_boundary_per_batch() -> None:
    assert not BoundaryGuided().batch_boundary
    paper = BoundaryGuided(spp_variant="paper", beta=0.25, normalizer=NU)
    assert paper.batch_boundary
    normal = torch.tensor([-8.0, -3.0, 2.0, 5.0], dtype=torch.float64)
    assert paper.boundary(normal).item() == pytest.approx(B_N, rel=1e-12)
