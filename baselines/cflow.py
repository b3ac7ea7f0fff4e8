"""CFLOW-AD (Gudovskiy et al., WACV 2022) as a configuration of the flow detector.

CFLOW-AD's conditional flows on positional codes, trained by maximum likelihood on normal images, are
NFAD's detector (``bgad.baselines.nfad.NFAD``); what makes it CFLOW-AD is its backbone,
WideResNet-50-2 with torchvision's ImageNet weights, and its fibers of 256 per optimizer step. The
method registry reads both from here. This module imports nothing heavy, so that reading the
registry does not import torch.
"""

from __future__ import annotations

from typing import Any

#: The detector CFLOW-AD runs (an import path, loaded when a cell builds it).
DETECTOR = "bgad.baselines.nfad:NFAD"

#: The settings that make NFAD's detector CFLOW-AD (defaults of the ``cflow`` method).
SETTINGS: dict[str, Any] = {"backbone": "wide_resnet50_2", "fiber_size": 256}
