"""The boundary-guided loss's settings (docs/method.md §3), declared once and free of torch.

The loss object (``bgad.losses.BoundaryGuided``) and the suite's typed flow settings
(``FlowParams``) both inherit ``BoundaryLossSettings``, so β, τ, ν, λ and the focal
weighting have one name, type, default, range and description. It is a module of its own because the
suite reads its settings without importing torch (``bgad-bench ls`` and ``config`` stay fast), and
``bgad.losses`` needs torch.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class BoundaryLossSettings(BaseModel):
    """Hyper-parameters of the boundary-guided loss; the defaults are the CVPR scripts' values.

    ``spp_variant``: "code" takes the boundary and means per fiber chunk (the released code);
    "paper" takes sums (arXiv Eq. 10) and a boundary computed once from all normal locations of the
    image batch at that level.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)

    beta: float = Field(0.01, gt=0, lt=1, description="normal boundary quantile β")
    tau: float = Field(0.1, ge=0, description="margin τ between the boundaries")
    normalizer: float = Field(10.0, gt=0, description="log-likelihood normaliser ν")
    lam: float = Field(1.0, ge=0, description="weight λ of the semi-push-pull loss")
    focal: bool = Field(True, description="asymmetric focal weighting")
    focal_clip: float | None = Field(
        None, gt=0, description="upper clip of the anomalous focal weight (None: unbounded)"
    )
    spp_variant: Literal["code", "paper"] = Field(
        "code", description="per-chunk means (code) or sums (paper)"
    )
