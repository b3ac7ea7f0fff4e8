"""The pieces DevNet and DRA share: deviation loss, top-k pooling, balanced sampler, pyramid, backbone."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from bgad.baselines._supervised import (
    BalancedBatchSampler,
    FineTunedBackbone,
    PermutationStream,
    deviation_loss,
    image_pyramid,
    random_rotation,
    step_decay,
    topk_mean,
)
from bgad.baselines.devnet import DevNet
from bgad.baselines.dra import DRA

from bgad.flow_detector import TrainingData


def test_deviation_loss_equals_hand_computation() -> None:
    scores = [0.5, -1.0, 3.0, 7.0]
    targets = [0, 0, 1, 1]
    prior = [-1.0, 0.0, 1.0, 2.0]
    mean = sum(prior) / 4
    std = math.sqrt(sum((p - mean) ** 2 for p in prior) / 3)  # unbiased, as torch.std
    margin = 5.0
    terms = []
    for s, t in zip(scores, targets, strict=True):
        dev = (s - mean) / std
        terms.append(abs(dev) if t == 0 else max(0.0, margin - dev))
    expected = sum(terms) / 4
    got = deviation_loss(torch.tensor(scores), torch.tensor(targets).bool(), torch.tensor(prior), margin)
    assert got.item() == pytest.approx(expected, rel=1e-6)
    assert expected == pytest.approx((0 + 1.5 / std + (5 - 2.5 / std) + 0) / 4)  # the hand numbers


def test_deviation_loss_margin_is_one_sided() -> None:
    prior = torch.tensor([-1.0, 1.0])  # mean 0, std √2
    far = torch.tensor([10.0 * math.sqrt(2)])
    assert deviation_loss(far, torch.ones(1), prior, 5.0).item() == 0.0  # beyond the margin: no cost
    assert deviation_loss(far, torch.zeros(1), prior, 5.0).item() == pytest.approx(10.0)


def test_topk_mean_equals_reference() -> None:
    cells = torch.tensor([[[0.1, -9.0, 2.0, 0.0, 3.0], [1.0, -0.5, 4.0, 0.2, 0.3]]])  # (1, 2, 5)
    magnitudes = sorted((abs(v) for v in cells.flatten().tolist()), reverse=True)
    assert topk_mean(cells, 0.3).item() == pytest.approx(sum(magnitudes[:3]) / 3)  # ⌊10·0.3⌋ = 3
    assert topk_mean(cells, 0.01).item() == pytest.approx(9.0)  # at least one cell
    assert topk_mean(cells, 1.0).item() == pytest.approx(sum(magnitudes) / 10)
    with pytest.raises(ValueError, match="topk_ratio"):
        topk_mean(cells, 0.0)


def test_permutation_stream_uses_each_index_once_per_pass_across_calls() -> None:
    stream = PermutationStream(7, torch.Generator().manual_seed(0))
    drawn = torch.cat([stream.take(3) for _ in range(7)])  # 21 draws = 3 passes, split across calls
    for p in range(3):
        assert sorted(drawn[7 * p : 7 * (p + 1)].tolist()) == list(range(7))


def test_balanced_sampler_gives_half_half_batches_of_the_given_anomalies() -> None:
    sampler = BalancedBatchSampler(n_normal=9, n_anomalous=3, batch_size=11, generator=torch.Generator())
    for _ in range(20):
        normal, anomalous = sampler.next_batch()
        assert len(normal) == 5 and len(anomalous) == 6  # ⌊11/2⌋ normal, the rest anomalies
        assert set(normal.tolist()) <= set(range(9)) and set(anomalous.tolist()) <= set(range(3))
    only_normal = BalancedBatchSampler(n_normal=4, n_anomalous=0, batch_size=6, generator=torch.Generator())
    normal, anomalous = only_normal.next_batch()
    assert len(normal) == 6 and len(anomalous) == 0


def test_image_pyramid_halves_with_nearest_neighbour() -> None:
    images = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).reshape(2, 3, 8, 8)
    full, half = image_pyramid(images, 2)
    assert full is images and half.shape == (2, 3, 4, 4)
    assert torch.equal(half, images[:, :, ::2, ::2])  # nearest picks every other pixel


def test_rotation_is_seeded_and_off_at_zero_degrees() -> None:
    images = torch.rand(3, 3, 16, 16)
    assert random_rotation(images, 0.0, torch.Generator()) is images
    a = random_rotation(images, 180.0, torch.Generator().manual_seed(1))
    b = random_rotation(images, 180.0, torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and not torch.equal(a, images)


def test_backbone_is_trainable_last_stage_with_the_wheel_weights() -> None:
    backbone = FineTunedBackbone("tf_efficientnet_lite0")
    assert not backbone.weights.random and backbone.channels == 320
    out = backbone(torch.rand(2, 3, 64, 64))
    assert out.shape == (2, 320, 2, 2)
    out.sum().backward()
    assert all(p.grad is not None for p in backbone.parameters() if p.requires_grad)
    frozen = FineTunedBackbone("tf_efficientnet_lite0", random_weights=True, freeze_batch_norm=True).train()
    norms = [m for m in frozen.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert norms and not any(m.training for m in norms)


def test_step_decay_drops_when_the_authors_stepped_scheduler_does() -> None:
    # StepLR(10, 0.1) stepped before each epoch: epochs 0–8 at lr, 9–18 at lr/10, 19– at lr/100
    assert [step_decay(e, 10, 0.1) for e in (0, 8, 9, 18, 19)] == pytest.approx([1, 1, 0.1, 0.1, 0.01])


def _training_data(normal: torch.Tensor, anomalies: torch.Tensor) -> TrainingData:
    """The suite's TrainingData of an image method: one "level", the images themselves."""
    none = np.zeros((0, 64, 64, 3), np.uint8)
    return TrainingData([normal], none, [anomalies], none, none[..., 0], "object", lambda images: [])


@pytest.mark.parametrize("method", [DevNet, DRA])
def test_an_evaluation_after_epoch_e_is_what_a_schedule_of_e_epochs_gives(
    method: type, tiny: dict, tiny_images
) -> None:
    """With a constant learning rate the runner's evaluation after each epoch is exactly a shorter
    schedule's result: the schedule study reads several lengths off one run (docs/supervised.md)."""
    normal, anomalies, test = tiny_images
    constant = {**tiny, "lr_step_epochs": 1000, "eval_every": 1}
    seen: dict[int, np.ndarray] = {}
    long = method(**{**constant, "epochs": 3})

    def evaluate(epoch: int) -> None:
        seen[epoch] = long.score([test], (64, 64)).image_scores

    long.fit(_training_data(normal, anomalies), after_meta_epoch=evaluate)
    assert sorted(seen) == [0, 1, 2]
    short = method(**{**constant, "epochs": 2}).fit(_training_data(normal, anomalies))
    np.testing.assert_array_equal(short.score([test], (64, 64)).image_scores, seen[1])
    assert not np.array_equal(seen[0], seen[2])


def test_suite_scores_are_the_coarse_maps_upsampled_and_the_methods_image_scores(
    tiny: dict, tiny_images
) -> None:
    normal, anomalies, test = tiny_images
    det = DevNet(**tiny).fit(_training_data(normal, anomalies))
    coarse = det.score_images(test)
    scores = det.score([test], (64, 64))
    assert scores.maps.shape == (5, 64, 64) and scores.level_ll is None
    np.testing.assert_array_equal(scores.image_scores, coarse.scores)
    expected = torch.nn.functional.interpolate(
        torch.from_numpy(coarse.maps)[:, None], size=(64, 64), mode="bilinear", align_corners=False
    )[:, 0]
    np.testing.assert_allclose(scores.maps, expected.numpy())
    assert det.training_summary() == {"train_loss": det.loss_history_[-1]}


def test_eval_every_evaluates_every_nth_epoch_and_the_last(tiny: dict, tiny_images) -> None:
    normal, anomalies, _ = tiny_images
    evaluated: list[int] = []
    DevNet(**{**tiny, "epochs": 5, "steps_per_epoch": 1, "eval_every": 2}).fit(
        _training_data(normal, anomalies), after_meta_epoch=evaluated.append
    )
    assert evaluated == [1, 3, 4]
