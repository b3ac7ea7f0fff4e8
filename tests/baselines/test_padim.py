"""PaDiM: Mahalanobis distances equal a direct numpy computation; channel subset is seeded."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from bgad.baselines.padim import PaDiM

from bgad.flow_detector import TrainingData

SHAPES = [(3, 8, 8), (5, 4, 4), (6, 2, 2)]


def _feats(n: int, gen: torch.Generator) -> list[torch.Tensor]:
    return [torch.randn(n, c, h, w, generator=gen) for c, h, w in SHAPES]


def _numpy_reference(
    train: list[torch.Tensor], test: list[torch.Tensor], idx: np.ndarray, ridge: float
) -> np.ndarray:
    def embed(feats: list[torch.Tensor]) -> np.ndarray:
        up = [F.interpolate(f, size=(8, 8), mode="nearest") for f in feats]
        emb = torch.cat(up, 1).double().numpy()[:, idx]  # (N, d, 8, 8)
        return emb.reshape(len(emb), len(idx), -1)

    tr, te = embed(train), embed(test)
    out = np.zeros((len(te), tr.shape[2]))
    for p in range(tr.shape[2]):
        x = tr[:, :, p]
        mean = x.mean(0)
        cov = np.cov(x, rowvar=False) + ridge * np.eye(len(idx))
        inv = np.linalg.inv(cov)
        for i in range(len(te)):
            delta = te[i, :, p] - mean
            out[i, p] = np.sqrt(delta @ inv @ delta)
    return out.reshape(len(te), 8, 8)


def test_mahalanobis_equals_numpy_per_position() -> None:
    gen = torch.Generator().manual_seed(0)
    train, test = _feats(20, gen), _feats(4, gen)
    det = PaDiM(padim_channels=7, seed=3)
    det.chunk_images = 6  # chunks that do not divide the 20 images
    det.fit(_data(train))
    ours = det.mahalanobis(test).numpy()
    ref = _numpy_reference(train, test, det.channel_indices_.numpy(), 0.01)
    np.testing.assert_allclose(ours, ref, rtol=1e-9, atol=1e-9)
    scores = det.score(test, (16, 16))
    assert scores.maps.shape == (4, 16, 16) and scores.maps.dtype == np.float64
    np.testing.assert_array_equal(scores.image_scores, scores.maps.reshape(4, -1).max(1))


def _data(train: list[torch.Tensor]) -> TrainingData:
    return TrainingData(train, None, None, None, None, "object", None)


def test_channel_subset_is_seeded_sorted_and_capped() -> None:
    data = _data(_feats(3, torch.Generator().manual_seed(0)))

    def chosen(seed: int, **params: int) -> torch.Tensor:
        return PaDiM(seed=seed, **params).fit(data).channel_indices_

    a, b, c = chosen(1, padim_channels=5), chosen(1, padim_channels=5), chosen(2, padim_channels=5)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(a, a.sort().values) and len(a.unique()) == 5
    assert chosen(1).tolist() == list(range(14))  # default 100 > 14 channels: all


def test_a_saved_padim_scores_as_the_fitted_one() -> None:
    """The channel subset is fitted state: a loaded model takes it from the saved state."""
    gen = torch.Generator().manual_seed(5)
    train, test = _feats(8, gen), _feats(2, gen)
    fitted = PaDiM(padim_channels=6, seed=4).fit(_data(train))
    loaded = PaDiM().load_model_state(fitted.model_state(), SHAPES)  # another seed: the state decides
    assert torch.equal(loaded.channel_indices_, fitted.channel_indices_)
    np.testing.assert_array_equal(loaded.score(test, (16, 16)).maps, fitted.score(test, (16, 16)).maps)
