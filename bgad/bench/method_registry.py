"""The method registry, complete on import: what each method is, its parameters, where its code is.

A ``MethodSpec`` owns its typed parameters (a model of ``bgad.bench.params``), says whether it is one of the
paper's methods or a reference we add, and names its detector by import path, so this module stays
light (no torch) and every listing, table and config check reads the same entries. The detector's
module is imported only when a cell builds one (timm's registry does the same with entry points).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Literal

from bgad.bench.params import FlowParams, PaDiMParams, PatchCoreParams, Settings
from bgad.registry import Registry

LossKind = Literal["ml", "bgad_wo", "bgad", "bgad_cc"]


@dataclass(frozen=True)
class MethodSpec:
    """A registered method.

    ``params``: the model of its own settings. ``defaults``: settings it changes from the model's
    defaults (e.g. CFLOW-AD's backbone); ``loss``: which loss a flow method trains with (None for
    methods that are not flows); ``reference``: True for baselines the paper does not report.
    """

    name: str
    label: str
    description: str
    params: type[Settings]
    detector: str  # "module:Class", imported when a cell builds one
    loss: LossKind | None = None
    uses_anomalies: bool = False
    reference: bool = False
    iterative: bool = True  # trained over meta-epochs (False: fitted in one pass)
    defaults: dict[str, Any] = field(default_factory=dict)

    def detector_class(self) -> Any:
        module, _, attr = self.detector.partition(":")
        return getattr(importlib.import_module(module), attr)

    def build(self, cfg: Any, feature_shapes: list[tuple[int, int, int]], device: Any = "cpu") -> Any:
        """The detector for feature maps of the given (channels, height, width) per level."""
        return self.detector_class()(cfg, self, feature_shapes, device)

    def describe(self) -> dict:
        return {
            "name": self.name,
            "loss": self.loss,
            "uses_anomalies": self.uses_anomalies,
            "reference": self.reference,
            "description": self.description,
            "defaults": self.defaults,
            "detector": self.detector.replace(":", "."),
        }


METHODS: Registry[MethodSpec] = Registry("method")
_FLOWS = "bgad.flow_detector:FlowDetector"

for _spec in (
    MethodSpec(
        "bgad", "BGAD", "BGAD: ML + boundary-guided semi-push-pull with known and RACP anomalies",
        FlowParams, _FLOWS, loss="bgad", uses_anomalies=True,
    ),
    MethodSpec(
        "bgad_wo", "BGAD w/o", "BGAD w/o anomalies: ML + semi-pull from meta-epoch 1",
        FlowParams, _FLOWS, loss="bgad_wo",
    ),
    MethodSpec(
        "bgad_cc", "BGAD†",
        "BGAD† (slides' ablation): the boundaries with a conventional pull-all/push-all contrastive loss",
        FlowParams, _FLOWS, loss="bgad_cc", uses_anomalies=True,
    ),
    MethodSpec(
        "nfad", "NFAD", "NFAD: normalizing flows on normal data only (BGAD's unsupervised baseline)",
        FlowParams, _FLOWS, loss="ml",
    ),
    MethodSpec(
        "cflow", "CFLOW-AD",
        "CFLOW-AD: conditional flows on WideResNet-50-2 features (torchvision ImageNet weights), fibers of 256",
        FlowParams, _FLOWS, loss="ml", defaults={"backbone": "wide_resnet50_2", "fiber_size": 256},
    ),
    MethodSpec(
        "patchcore", "PatchCore",
        "PatchCore: nearest-neighbour distance to a greedy coreset of locally aware patch features "
        "(levels at strides 8 and 16), normal images only",
        PatchCoreParams, "bgad.baselines.patchcore:PatchCore", reference=True, iterative=False,
    ),
    MethodSpec(
        "padim", "PaDiM",
        "PaDiM: per-position Gaussian over a random subset of 100 channels of all three levels, "
        "Mahalanobis distance, normal images only",
        PaDiMParams, "bgad.baselines.padim:PaDiM", reference=True, iterative=False,
    ),
):  # fmt: skip
    METHODS.register(_spec.name, _spec)


def methods_using(setting: str) -> list[str]:
    """The methods whose parameters include ``setting``."""
    return [name for name in METHODS.names() if setting in METHODS.get(name).params.model_fields]
