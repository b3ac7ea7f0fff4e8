"""Typed settings: what a run needs (``RunSettings``), what defines a cell (``CellSettings``) and each
method's own parameters (``FlowParams``, ``PatchCoreParams``, ``PaDiMParams``, ``DevNetParams``,
``DRAParams``).

Each model is the single definition of its settings: name, type, default, allowed range and a
one-line description (shown by ``bgad-bench config --describe``). pydantic validates every value
where it enters (profile file, protocol, ``--set``), so a bad value stops the plan before any cell
runs, with the setting's name, the allowed range and where the value came from. Defaults are the
released code's (docs/method.md); changing one changes cell ids (``RunConfig.result_hash``).
Which methods use which model is the method registry's to say (``bgad.bench.method_registry``).
"""

from __future__ import annotations

from types import UnionType
from typing import Literal, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.fields import FieldInfo

from bgad.loss_settings import BoundaryLossSettings


class Settings(BaseModel):
    """Frozen, strict about names (unknown keys are errors), lenient about ``"3"`` → 3 from the command line."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


class RunSettings(Settings):
    """How and where a cell runs. None of these can change its numbers, so none is part of a cell's id."""

    data_root: str | None = Field(
        None, description="dataset folder in the MVTec layout (default: the prepared copy)"
    )
    backbone_weights: str | None = Field(
        None, description="local weights file for the backbone (no download)"
    )
    threads: int | None = Field(
        None, ge=1, description="torch CPU threads; None: fitted to the free cores while the cell runs"
    )
    device: str = Field(
        "auto", pattern=r"^(auto|cpu|cuda(:\d+)?|mps)$", description="auto, cpu, cuda or cuda:N"
    )
    malloc_tuning: bool = Field(
        True, description="raise glibc's malloc thresholds (same numbers, fewer page faults)"
    )
    shared_positions: bool = Field(
        True,
        description="compute the positional code's share of each coupling once per grid row/column (same math)",
    )
    feature_cache: bool = Field(True, description="keep backbone features on disk for later runs")
    loglik_samples: int = Field(
        5000, ge=0, description="log-likelihood samples per level kept for histograms"
    )
    map_samples: int = Field(4, ge=1, description="test images whose anomaly maps are kept for panels")
    save_model: bool = Field(False, description="keep the trained model in the cell folder (for predict)")


AnomalySelection = Literal["multi_class", "one_class"]
#: The largest seed whose per-flow seeds (seed × 1000 + level, ``bgad.flow_detector``) numpy still accepts.
MAX_SEED = (2**32 - 1) // 1000 - 1


class CellSettings(Settings):
    """What a cell is: method, data, backbone and input, known anomalies, seed."""

    method: str = Field("bgad", description="registered method (bgad-bench ls)")
    dataset: str = Field("synthetic", description="registered dataset")
    category: str = Field("weave", description="category of the dataset")
    seed: int = Field(
        0,
        ge=0,
        le=MAX_SEED,
        description="seed of every random choice of the cell; each flow is seeded with seed×1000 + its level, "
        "which numpy takes up to 2^32 - 1",
    )
    profile: str = Field(
        "quick", description="the profile the settings were resolved from (set by --profile)"
    )
    backbone: str = Field("tf_efficientnet_lite0", description="backbone preset (bgad-bench ls)")
    random_weights: bool = Field(False, description="random backbone weights (timing only; recorded)")
    category_kind: Literal["auto", "texture", "object"] = Field(
        "auto",
        description="texture (RACP pastes anywhere) or object; auto: the dataset's facts or bgad_dataset.json",
    )
    input_size: int = Field(256, ge=32, le=2048, multiple_of=32, description="square input size in pixels")
    feature_dtype: Literal["float32", "float16"] = Field("float32", description="dtype of cached features")
    n_known_anomalies: int = Field(10, ge=0, description="known anomalies drawn from the test set (-k)")
    anomaly_selection: AnomalySelection = Field(
        "multi_class",
        description="multi_class: from all defect types; one_class: from anomaly_defect_type only",
    )
    anomaly_defect_type: str | None = Field(
        None, description="defect type of the known anomalies (one_class)"
    )
    train_types: str | None = Field(
        None, description="comma-separated defect types known anomalies come from"
    )
    test_types: str | None = Field(None, description="comma-separated anomalous types kept in the test set")


class FlowParams(Settings, BoundaryLossSettings):
    """BGAD's flows, schedule, known-anomaly data and boundary-guided loss (docs/method.md §2–3).

    The loss's settings (β, τ, ν, λ, focal weighting, variant) are the loss's own
    (``bgad.loss_settings.BoundaryLossSettings``), inherited here.
    """

    n_blocks: int = Field(8, ge=1, le=64, description="coupling blocks per flow")
    clamp: float = Field(1.9, gt=0, description="affine clamping of the coupling blocks")
    cond_dim: int = Field(128, ge=4, multiple_of=4, description="dimension of the 2-D positional code")
    flow_arch: Literal["conditional", "unconditional"] = Field(
        "conditional", description="positional condition (released default) or none (released flow_model)"
    )
    feature_norm: Literal["none", "standardize"] = Field(
        "none", description="none (released) or a fixed standardising input layer; ℓ keeps its definition"
    )
    meta_epochs: int = Field(25, ge=1, description="meta-epochs (an evaluation after each)")
    sub_epochs: int = Field(8, ge=1, description="passes over the normal images per meta-epoch")
    min_images_per_meta_epoch: int = Field(
        0, ge=0, description="raise sub_epochs until a meta-epoch sees this many normal images (0: off)"
    )
    phase1_epochs: int = Field(
        1, ge=0, description="meta-epochs of normal-only training before the boundary loss"
    )
    warmup_epochs: int = Field(2, ge=0, description="meta-epochs of linear learning-rate warm-up")
    batch_size: int = Field(32, ge=1, description="images per batch")
    lr: float = Field(2e-4, gt=0, le=1, description="Adam learning rate")
    lr_min_factor: float = Field(1e-3, gt=0, le=1, description="cosine schedule ends at lr·lr_min_factor")
    warmup_start_factor: float = Field(
        0.1, gt=0, le=1, description="warm-up starts at lr·warmup_start_factor"
    )
    fiber_size: int = Field(4096, ge=2, description="feature positions per optimizer step")
    repeats: int = Field(5, ge=0, description="copies of each real known anomaly per epoch")
    racp: bool = Field(True, description="RandAugmented CutPaste anomalies")
    racp_per_anomaly: int = Field(5, ge=0, description="RACP samples per known anomaly per epoch")
    racp_transforms: int = Field(3, ge=1, le=10, description="RandAugment transforms per RACP sample")
    balanced_sampler: bool = Field(False, description="the CVPR text's 2:1 normal:anomalous batches")
    eval_every: int = Field(1, ge=1, description="evaluate every this many meta-epochs (and after the last)")

    @model_validator(mode="after")
    def _phases_fit(self) -> FlowParams:
        for name in ("phase1_epochs", "warmup_epochs"):
            if getattr(self, name) > self.meta_epochs:
                raise ValueError(f"{name}={getattr(self, name)} exceeds meta_epochs={self.meta_epochs}")
        return self


class PatchCoreParams(Settings):
    """PatchCore (Roth et al., CVPR 2022) on the suite's features: a reference, not in the paper."""

    coreset_ratio: float = Field(
        0.1, gt=0, le=1, description="fraction of patches kept by the greedy coreset"
    )
    coreset_projection_dim: int = Field(128, ge=1, description="random projection for the coreset distances")
    coreset_pool: float = Field(
        0.0,
        ge=0,
        description="greedy selection over a seeded random pool of this many times the coreset size "
        "(0: the whole bank, exact)",
    )
    coreset_batch: int = Field(
        1,
        ge=1,
        description="coreset patches chosen per pass over the bank (1: the exact greedy rule; b > 1: "
        "the b farthest at once, the bank read 1/b as often)",
    )
    patchcore_reweight: bool = Field(
        False, description="the paper's image-score re-weighting over 9 neighbours"
    )
    patchcore_neighbors: int = Field(9, ge=1, description="coreset neighbours of the re-weighting")
    smoothing_sigma: float = Field(4.0, ge=0, description="Gaussian smoothing of the maps (σ in pixels)")


class PaDiMParams(Settings):
    """PaDiM (Defard et al., ICPR 2021) on the suite's features: a reference, not in the paper."""

    padim_channels: int = Field(100, ge=1, description="random channel subset of the concatenated levels")
    padim_ridge: float = Field(0.01, gt=0, description="ridge added to each covariance")
    smoothing_sigma: float = Field(4.0, ge=0, description="Gaussian smoothing of the maps (σ in pixels)")


class SupervisedParams(Settings):
    """DevNet's and DRA's shared training (docs/supervised.md): a backbone fine-tuned end to end on
    balanced batches with the deviation loss. Defaults are the authors' released ones."""

    epochs: int = Field(50, ge=1, description="training epochs (an evaluation after every eval_every)")
    steps_per_epoch: int = Field(20, ge=1, description="optimizer steps per epoch")
    batch_size: int = Field(48, ge=2, description="images per batch, half normal and half known anomalies")
    lr: float = Field(2e-4, gt=0, le=1, description="Adam learning rate")
    weight_decay: float = Field(1e-5, ge=0, description="Adam weight decay")
    lr_step_epochs: int = Field(10, ge=1, description="the learning rate drops every this many epochs")
    lr_gamma: float = Field(0.1, gt=0, le=1, description="factor of each learning-rate drop")
    grad_clip_norm: float = Field(1.0, gt=0, description="gradient norm clipping")
    margin: float = Field(
        5.0, gt=0, description="deviation loss: anomalies pushed this many σ above the prior"
    )
    prior_samples: int = Field(5000, ge=2, description="N(0, 1) draws of the deviation loss's reference")
    topk_ratio: float = Field(0.1, gt=0, le=1, description="top-k pooling over this fraction of the cells")
    n_scales: int = Field(2, ge=1, le=4, description="image pyramid levels (image, half size, ...)")
    rotation_degrees: float = Field(180.0, ge=0, le=180, description="random rotation of training images")
    freeze_batch_norm: bool = Field(
        False, description="keep the backbone's ImageNet batch-norm statistics while fine-tuning"
    )
    eval_every: int = Field(1, ge=1, description="evaluate every this many epochs (and after the last)")


class DevNetParams(SupervisedParams):
    """DevNet (Pang et al.), image version: backbone + 1×1 scoring conv + top-k pooling."""


class DRAParams(SupervisedParams):
    """DRA (Ding et al., CVPR 2022): holistic, seen, pseudo and latent residual heads; 30 epochs."""

    epochs: int = Field(30, ge=1, description="training epochs (an evaluation after every eval_every)")
    n_ref: int = Field(5, ge=1, description="reference normal images of the latent residual head")
    pseudo_fraction: float = Field(
        0.5, ge=0, le=1, description="probability that a normal batch slot becomes a pseudo anomaly"
    )
    cutmix_area: tuple[float, float] = Field(
        (0.02, 0.15),
        description="pseudo anomaly: smallest and largest area of the pasted rectangle, fractions of the "
        "image (on the command line: 0.02/0.15)",
    )
    cutmix_aspect: float = Field(0.3, gt=0, le=1, description="pseudo anomaly: smallest aspect ratio")
    cutmix_jitter: float = Field(0.1, ge=0, le=0.5, description="pseudo anomaly: colour jitter amount")
    holistic_hidden: int = Field(256, ge=1, description="hidden units of the holistic normality head")
    holistic_dropout: float = Field(0.0, ge=0, lt=1, description="dropout of the holistic normality head")

    @field_validator("cutmix_area", mode="before")
    @classmethod
    def _pair_from_text(cls, value: object) -> object:
        """``--set cutmix_area=0.02/0.15`` (or ``0.02,0.15``): the two fractions, as reports print them."""
        if isinstance(value, str):
            return tuple(part.strip() for part in value.replace(",", "/").split("/"))
        return value

    @model_validator(mode="after")
    def _area_is_a_range(self) -> DRAParams:
        low, high = self.cutmix_area
        if not 0 < low <= high < 1:
            raise ValueError(f"cutmix_area must be two fractions 0 < low <= high < 1, got {self.cutmix_area}")
        return self


_BOUNDS = (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<"))


def limits_in_words(field: FieldInfo) -> str:
    """A setting's allowed values as a user reads them (">= 32, <= 2048, multiple of 32").

    ``config --describe`` shows this instead of pydantic's own objects (``Ge(ge=32)``), which name
    its internals rather than the rule.
    """
    union = get_origin(field.annotation) in (Union, UnionType)
    types = get_args(field.annotation) if union else (field.annotation,)
    words = [
        "one of " + ", ".join(str(choice) for choice in get_args(t))
        for t in types
        if get_origin(t) is Literal
    ]
    for item in field.metadata:
        words += [
            f"{sign} {getattr(item, key)}" for key, sign in _BOUNDS if getattr(item, key, None) is not None
        ]
        if getattr(item, "multiple_of", None) is not None:
            words.append(f"multiple of {item.multiple_of}")
        if getattr(item, "pattern", None):
            words.append(f"matching {item.pattern}")
    if words and type(None) in types:
        words.append("or none")
    return ", ".join(words)
