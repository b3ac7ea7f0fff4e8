"""Data for the supervised baselines' tests (DevNet, DRA): tiny random images, and the synthetic widget."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bgad.data.datasets import load_category
from bgad.data.images import read_image
from bgad.features import resize_image, to_tensor
from bgad.selection import select_known_anomalies
from bgad.threads import governed_threads


@pytest.fixture
def one_thread():
    """Train on one thread: bitwise the same numbers on every run, and no OpenMP barrier stalls when the
    cores are shared (bgad/threads.py)."""
    with governed_threads(1):
        yield


@pytest.fixture
def tiny() -> dict:
    """Parameters that fit in a second: random backbone weights, two steps of four 64² images."""
    return {"random_weights": True, "epochs": 1, "steps_per_epoch": 2, "batch_size": 4}


@pytest.fixture
def tiny_images() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(normal, known anomalies, test) random 64² images in [0, 1]."""
    gen = torch.Generator().manual_seed(0)
    return tuple(torch.rand(n, 3, 64, 64, generator=gen) for n in (6, 3, 5))


@pytest.fixture(scope="session")
def widget_10_known() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, np.ndarray]:
    """The synthetic widget at 128²: train normals, 10 known anomalies (the suite's selection, seed 0),
    the reduced test set and its labels."""
    data = load_category("synthetic", "widget")
    known, test = select_known_anomalies(data.test, 10, seed=0, category="widget")

    def load(samples) -> torch.Tensor:
        return to_tensor([resize_image(read_image(s.image_path), 128) for s in samples])

    return load(data.train), load(known), load(test), np.array([s.label for s in test])
