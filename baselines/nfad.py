"""NFAD: normalizing flows on normal images only, BGAD's unsupervised baseline (docs/method.md §2).

The flow detector of BGAD (``bgad.flow_detector.FlowDetector``: one conditional flow per feature
level, scored by log-likelihood) trained by maximum likelihood in every meta-epoch: no boundaries,
no known or synthetic anomalies. Its settings are the flows' (``FlowParams``); CFLOW-AD is this
detector with other settings (``bgad.baselines.cflow``).
"""

from __future__ import annotations

from bgad.flow_detector import FlowDetector
from bgad.losses import MaximumLikelihood


class NFAD(FlowDetector):
    """The flow detector trained by maximum likelihood on normal images only."""

    loss_class = MaximumLikelihood
