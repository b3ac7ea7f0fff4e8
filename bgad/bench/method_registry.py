"""The method registry, complete on import: what each method is, its parameters, where its code is.

A ``MethodSpec`` owns its typed parameters (a model of ``bgad.bench.params``), says whether it is one of the
paper's methods or a reference we add, and names its detector by import path, so this module stays
light (no torch) and every listing, table and config check reads the same entries. The detector's
module is imported only when a cell builds one (timm's registry does the same with entry points).
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass, field
from typing import Any, Literal

from bgad.baselines import cflow
from bgad.bench.params import (
    CellSettings,
    DevNetParams,
    DRAParams,
    FlowParams,
    PaDiMParams,
    PatchCoreParams,
    RunSettings,
    Settings,
)
from bgad.registry import Registry

ROUND_NAMES: dict[str, tuple[str, str]] = {"meta_epochs": ("meta-epoch", "e"), "epochs": ("epoch", "ep")}
"""The setting that counts a method's training rounds → what logs and figures call one round, and the
round count's tag in figure names (``-e8``, ``-ep10``)."""


@dataclass(frozen=True)
class MethodSpec:
    """A registered method.

    ``params``: the model of its own settings. ``defaults``: settings it changes from the model's
    defaults (e.g. CFLOW-AD's backbone); ``detector``: its class, whose constructor takes the
    parameters by name (the flow methods differ by their class's loss); ``uses_anomalies``: the cell
    hands it the known anomalies; ``reference``: True for baselines the paper does not report;
    ``published_as``: its name in the published tables (``protocols/published/``) when not ``name``;
    ``paired_with``: the method the reports test it against, seed by seed (BGAD: NFAD, its flows
    without the anomalies); ``supervised``: a competitor trained on the same known anomalies, which the
    reports test BGAD against; ``inputs``: what the cell hands it, the frozen backbone's cached
    ``features`` or the resized ``images`` (a method that fine-tunes its own backbone); ``rounds``: the
    setting that counts its training rounds (the runner evaluates between them); ``paper``: where it
    comes from, for listings; ``min_known_anomalies``: fewer is refused before a grid runs (DevNet: 1).
    """

    name: str
    label: str
    description: str
    params: type[Settings]
    detector: str  # "module:Class", imported when a cell builds one
    uses_anomalies: bool = False
    reference: bool = False
    iterative: bool = True  # trained over meta-epochs (False: fitted in one pass)
    defaults: dict[str, Any] = field(default_factory=dict)
    published_as: str | None = None
    paired_with: str | None = None
    supervised: bool = False
    min_known_anomalies: int = 0
    inputs: Literal["features", "images"] = "features"
    rounds: Literal["meta_epochs", "epochs"] = "meta_epochs"
    paper: str = ""

    @property
    def round_word(self) -> str:
        """What logs and figures call one training round: the flows' meta-epoch, DevNet's and DRA's epoch."""
        return ROUND_NAMES[self.rounds][0]

    def detector_class(self) -> Any:
        module, _, attr = self.detector.partition(":")
        return getattr(importlib.import_module(module), attr)

    def build(self, cfg: Any, device: Any = "cpu") -> Any:
        """The unfitted detector of a resolved config: its parameters, the cell's seed, the device.

        Run settings its constructor names are passed too (the flows' ``shared_positions``): they
        change how a detector computes, never its numbers; so are the cell's backbone settings when it
        builds its own backbone (DevNet, DRA).
        """
        cls = self.detector_class()
        accepted = inspect.signature(cls).parameters
        shared = (*RunSettings.model_fields, *(n for n in CellSettings.model_fields if n != "seed"))
        run = {name: getattr(cfg, name) for name in shared if name in accepted}
        run["device"] = device  # resolved by the caller ("auto" → the GPU when there is one)
        return cls(**cfg.params.model_dump(), **run, seed=cfg.seed)

    def describe(self) -> dict:
        return {
            "name": self.name,
            "uses_anomalies": self.uses_anomalies,
            "reference": self.reference,
            "description": self.description,
            "defaults": self.defaults,
            "detector": self.detector.replace(":", "."),
            "supervised": self.supervised,
            "inputs": self.inputs,
            "paper": self.paper,
        }


METHODS: Registry[MethodSpec] = Registry("method")

for _spec in (
    MethodSpec(
        "bgad", "BGAD", "BGAD: ML + boundary-guided semi-push-pull with known and RACP anomalies",
        FlowParams, "bgad.flow_detector:BGAD", uses_anomalies=True, paired_with="nfad",
        paper="Yao et al., Explicit Boundary Guided Semi-Push-Pull Contrastive Learning for Supervised AD (CVPR 2023)",
    ),
    MethodSpec(
        "bgad_wo", "BGAD w/o", "BGAD w/o anomalies: ML + semi-pull from meta-epoch 1",
        FlowParams, "bgad.flow_detector:BGADWithoutAnomalies",
    ),
    MethodSpec(
        "bgad_cc", "BGAD†",
        "BGAD† (slides' ablation): the boundaries with a conventional pull-all/push-all contrastive loss",
        FlowParams, "bgad.flow_detector:BGADConventional", uses_anomalies=True, published_as="bgad_dagger",
    ),
    MethodSpec(
        "nfad", "NFAD", "NFAD: normalizing flows on normal data only (BGAD's unsupervised baseline)",
        FlowParams, "bgad.baselines.nfad:NFAD", paper="BGAD's flows without anomalies (CVPR 2023 paper's NFAD)",
    ),
    MethodSpec(
        "cflow", "CFLOW-AD",
        "CFLOW-AD: conditional flows on WideResNet-50-2 features (torchvision ImageNet weights), fibers of 256",
        FlowParams, cflow.DETECTOR, defaults=cflow.SETTINGS,
        paper="Gudovskiy et al., CFLOW-AD: Real-Time Unsupervised AD via Conditional Normalizing Flows (WACV 2022)",
    ),
    MethodSpec(
        "patchcore", "PatchCore",
        "PatchCore: nearest-neighbour distance to a greedy coreset of locally aware patch features "
        "(levels at strides 8 and 16), normal images only",
        PatchCoreParams, "bgad.baselines.patchcore:PatchCore", reference=True, iterative=False,
        paper="Roth et al., Towards Total Recall in Industrial Anomaly Detection (CVPR 2022)",
    ),
    MethodSpec(
        "padim", "PaDiM",
        "PaDiM: per-position Gaussian over a random subset of 100 channels of all three levels, "
        "Mahalanobis distance, normal images only",
        PaDiMParams, "bgad.baselines.padim:PaDiM", reference=True, iterative=False,
        paper="Defard et al., PaDiM: a Patch Distribution Modeling Framework (ICPR 2021)",
    ),
    MethodSpec(
        "devnet", "DevNet",
        "DevNet: fine-tuned backbone, 1×1 scoring conv, top-k pooling over a two-scale pyramid, deviation "
        "loss on balanced batches of normal images and the known anomalies",
        DevNetParams, "bgad.baselines.devnet:DevNet", uses_anomalies=True, supervised=True,
        min_known_anomalies=1, inputs="images", rounds="epochs",
        paper="Pang et al., Explainable Deep Few-shot Anomaly Detection with Deviation Networks (2021)",
    ),
    MethodSpec(
        "dra", "DRA",
        "DRA: fine-tuned backbone with holistic-normality, seen, pseudo (CutPaste) and latent-residual "
        "abnormality heads, each with a deviation loss; composite score",
        DRAParams, "bgad.baselines.dra:DRA", uses_anomalies=True, supervised=True,
        inputs="images", rounds="epochs",
        paper="Ding, Pang, Shen, Catching Both Gray and Black Swans: Open-set Supervised AD (CVPR 2022)",
    ),
):  # fmt: skip
    METHODS.register(_spec.name, _spec)


def methods_using(setting: str) -> list[str]:
    """The methods whose parameters include ``setting``."""
    return [name for name in METHODS.names() if setting in METHODS.get(name).params.model_fields]
