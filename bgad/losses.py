"""Losses on per-dimension log-likelihoods ℓ (docs/method.md §3), and the loss objects of the flow methods.

All functions take ℓ of one chunk of fibers and their location labels (0 normal, 1 anomalous) and
return a scalar loss. Boundaries and focal weights are computed on detached values, as the released
code does: they steer the gradient but receive none.

A flow method's loss is one object, chosen by its detector class (``FlowDetector.loss_class``):
``MaximumLikelihood`` (NFAD, CFLOW-AD), ``BoundaryGuided`` (BGAD), ``SemiPull`` (BGAD w/o anomalies)
or ``PushPullAll`` (BGAD†). It says whether the method has a boundary-guided second phase, whether
it learns from anomalies, and computes the phase-2 loss of a chunk.
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F

from bgad.loss_settings import BoundaryLossSettings

_ABS_FLOOR = 1e-6


def ml_loss(ll: torch.Tensor) -> torch.Tensor:
    """Per-fiber maximum-likelihood loss softplus(−ℓ) = −log σ(ℓ) (CFLOW-AD's loss)."""
    return F.softplus(-ll)


def normal_focal_weight(u: torch.Tensor) -> torch.Tensor:
    """w_n(u) = 1 if u > −0.2 else 11.7·(1 − e^u)^0.5·|u| (released-code constants), u = ℓ/ν."""
    hard = 11.7 * torch.sqrt(torch.clamp(1 - torch.exp(u), min=0.0)) * u.abs()
    return torch.where(u > -0.2, torch.ones_like(u), hard)


def anomalous_focal_weight(u: torch.Tensor, clip: float | None = None) -> torch.Tensor:
    """w_a(u) = 1 if u ≤ −1 else 0.53·(1 + e^u)²/|u|, with |u| floored at 1e-6; optional upper clip.

    Unbounded as u → 0 in the released code; the floor only prevents a division by zero.
    """
    hard = 0.53 * (1 + torch.exp(u)).pow(2) / u.abs().clamp(min=_ABS_FLOOR)
    weight = torch.where(u <= -1, torch.ones_like(u), hard)
    return weight.clamp(max=clip) if clip is not None else weight


def normal_boundary(ll_normal: torch.Tensor, beta: float, normalizer: float) -> torch.Tensor:
    """b_n = the ⌊β·|N|⌋-th smallest normal ℓ (0-based), divided by ν; detached."""
    if ll_normal.numel() == 0:
        raise ValueError("the normal boundary needs at least one normal location")
    k = int(beta * ll_normal.numel())
    return torch.sort(ll_normal.detach()).values[k] / normalizer


def _masked_mean_or_sum(values: torch.Tensor, reduction: str) -> torch.Tensor:
    if values.numel() == 0:  # an empty set contributes nothing (no NaN)
        return values.new_zeros(())
    return values.sum() if reduction == "sum" else values.mean()


def semi_push_pull(
    ll: torch.Tensor,
    labels: torch.Tensor,
    cfg: BoundaryLossSettings,
    b_n: torch.Tensor | None = None,
    push: bool = True,
    semi: bool = True,
) -> torch.Tensor:
    """L_ml + λ·(L_n + L_a) for one chunk: ML on normals, semi-pull below b_n, semi-push above b_a.

    ``b_n`` defaults to the chunk's own boundary; ``push=False`` drops L_a (BGAD w/o anomalies).
    ``semi=False`` is our reading of the slides' BGAD† ("conventional contrastive loss", not defined
    in the texts): every normal location is pulled and every anomalous one pushed, linearly, with no
    selection by the boundaries.
    """
    normal = labels == 0
    anomalous = labels == 1
    u = ll.detach() / cfg.normalizer
    w_n = normal_focal_weight(u) if cfg.focal else torch.ones_like(u)
    reduction = "sum" if cfg.spp_variant == "paper" else "mean"
    loss_ml = (w_n[normal] * ml_loss(ll[normal])).mean() if normal.any() else ll.new_zeros(())
    if b_n is None:
        b_n = normal_boundary(ll[normal], cfg.beta, cfg.normalizer)
    scaled = ll / cfg.normalizer
    pull = normal & (scaled <= b_n) if semi else normal
    loss_n = _masked_mean_or_sum(w_n[pull] * (b_n - scaled[pull]), reduction)
    loss = loss_ml + cfg.lam * loss_n
    if push:
        b_a = b_n - cfg.tau
        w_a = anomalous_focal_weight(u, cfg.focal_clip) if cfg.focal else torch.ones_like(u)
        pushed = anomalous & (scaled >= b_a) if semi else anomalous
        loss = loss + cfg.lam * _masked_mean_or_sum(w_a[pushed] * (scaled[pushed] - b_a), reduction)
    return loss


def weighted_ml(ll: torch.Tensor, cfg: BoundaryLossSettings) -> torch.Tensor:
    """ML loss of a chunk without anomalous locations (focal-weighted when focal weighting is on)."""
    if not cfg.focal:
        return ml_loss(ll).mean()
    return (normal_focal_weight(ll.detach() / cfg.normalizer) * ml_loss(ll)).mean()


class MaximumLikelihood:
    """softplus(−ℓ) averaged over the chunk in every meta-epoch: NFAD's and CFLOW-AD's loss.

    No second phase: no boundaries, no anomalies.
    """

    guided: ClassVar[bool] = False
    uses_anomalies: ClassVar[bool] = False
    batch_boundary: ClassVar[bool] = False

    @classmethod
    def from_settings(cls, settings: object) -> MaximumLikelihood:
        """The loss of a detector's settings (this one has none)."""
        return cls()

    def __call__(
        self, ll: torch.Tensor, labels: torch.Tensor, b_n: torch.Tensor | None = None
    ) -> torch.Tensor:
        return ml_loss(ll).mean()


class BoundaryGuided(BoundaryLossSettings):
    """BGAD's phase-2 loss: ML + semi-pull below b_n + semi-push above b_a = b_n − τ (``semi_push_pull``).

    ``uses_anomalies``: it pushes anomalous locations (L_a), so known and RACP anomalies join the
    training pool; ``semi``: only locations on the wrong side of a boundary are pulled or pushed.
    """

    guided: ClassVar[bool] = True
    uses_anomalies: ClassVar[bool] = True
    semi: ClassVar[bool] = True

    @classmethod
    def from_settings(cls, settings: object) -> BoundaryGuided:
        """The loss of a detector's (or a run config's) settings: its attributes of the same names."""
        return cls(**{name: getattr(settings, name) for name in BoundaryLossSettings.model_fields})

    @property
    def batch_boundary(self) -> bool:
        """The paper variant takes b_n once per image batch and level, from all its normal locations."""
        return self.spp_variant == "paper"

    def boundary(self, ll_normal: torch.Tensor) -> torch.Tensor:
        """b_n of these normal locations' ℓ (detached)."""
        return normal_boundary(ll_normal, self.beta, self.normalizer)

    def __call__(
        self, ll: torch.Tensor, labels: torch.Tensor, b_n: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The loss of a chunk that holds normal locations (``b_n``: the batch's boundary, or None).

        A loss that pushes anomalies, given a chunk without any, is the (focal-weighted) ML loss, as
        in the released code: without anomalies there is no push, and the pull waits for them.
        """
        if self.uses_anomalies and not (labels == 1).any():
            return weighted_ml(ll, self)
        return semi_push_pull(ll, labels, self, b_n=b_n, push=self.uses_anomalies, semi=self.semi)


class SemiPull(BoundaryGuided):
    """BGAD w/o anomalies: ML + semi-pull of the normal locations below b_n; no anomaly is used."""

    uses_anomalies: ClassVar[bool] = False


class PushPullAll(BoundaryGuided):
    """BGAD† (the slides' ablation, our reading): the boundaries with a conventional contrastive loss,
    every normal location pulled and every anomalous one pushed, linearly."""

    semi: ClassVar[bool] = False


#: The loss of a flow method.
FlowLoss = MaximumLikelihood | BoundaryGuided
