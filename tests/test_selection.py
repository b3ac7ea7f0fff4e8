"""Tests for bgad.selection.select_known_anomalies (docs/method.md §3): ⌊k/T⌋ per type plus a random
remainder, removed from the test set, a pure function of (files, seed, category) and independent of the
order in which the files are listed."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

import pytest

from bgad.data.samples import Sample
from bgad.selection import SelectionError, select_known_anomalies

TYPES = {"color": 6, "cut": 4, "hole": 5}


def _test_set(n_good: int = 10, types: dict[str, int] = TYPES) -> list[Sample]:
    root = Path("/data/cat/test")
    samples = [Sample(root / "good" / f"{i:03d}.png", 0, "good") for i in range(n_good)]
    for t, n in types.items():
        for i in range(n):
            samples.append(
                Sample(
                    root / t / f"{i:03d}.png", 1, t, mask_path=Path("/data/cat/gt") / t / f"{i:03d}_mask.png"
                )
            )
    return samples


def _paths(samples) -> list[str]:
    return [str(s.image_path) for s in samples]


@pytest.mark.parametrize(("k", "per_type"), [(3, 1), (5, 1), (7, 2), (10, 3), (2, 0)])
def test_multi_class_per_type_and_remainder(k: int, per_type: int) -> None:
    test = _test_set()
    known, remaining = select_known_anomalies(test, k, seed=0, category="carpet")
    assert len(known) == k
    counts = Counter(s.defect_type for s in known)
    for t in TYPES:
        assert counts[t] >= per_type, (t, counts)
    assert sum(counts.values()) == k
    assert all(s.is_anomalous for s in known)
    assert len(set(_paths(known))) == k
    # the chosen images leave the test set, everything else stays
    assert set(_paths(remaining)) == set(_paths(test)) - set(_paths(known))
    assert len(remaining) == len(test) - k


def test_multi_class_remainder_is_random_over_seeds() -> None:
    """k = 4 with 3 types: one of each type plus one extra, whose type varies with the seed."""
    extra_types = set()
    for seed in range(20):
        known, _ = select_known_anomalies(_test_set(), 4, seed=seed, category="carpet")
        counts = Counter(s.defect_type for s in known)
        assert set(counts) == set(TYPES)
        extra_types.add(max(counts, key=counts.get))
    assert len(extra_types) > 1


def test_type_with_fewer_images_than_its_share() -> None:
    known, _ = select_known_anomalies(_test_set(types={"a": 1, "b": 10}), 6, seed=0, category="x")
    counts = Counter(s.defect_type for s in known)
    assert counts["a"] == 1 and counts["b"] == 5


def test_deterministic_and_order_independent() -> None:
    test = _test_set()
    known, remaining = select_known_anomalies(test, 5, seed=42, category="carpet")
    again, again_rem = select_known_anomalies(list(test), 5, seed=42, category="carpet")
    assert _paths(known) == _paths(again) and _paths(remaining) == _paths(again_rem)
    for shuffle_seed in range(5):
        shuffled = list(test)
        random.Random(shuffle_seed).shuffle(shuffled)
        k2, r2 = select_known_anomalies(shuffled, 5, seed=42, category="carpet")
        assert _paths(k2) == _paths(known)
        assert _paths(r2) == _paths(remaining)
    # outputs are sorted by path (saved as file lists)
    assert _paths(known) == sorted(_paths(known))


def test_different_seeds_and_categories_differ() -> None:
    test = _test_set()
    picks = {
        tuple(_paths(select_known_anomalies(test, 5, seed=s, category="carpet")[0])) for s in (0, 42, 100)
    }
    assert len(picks) == 3
    a = _paths(select_known_anomalies(test, 5, seed=0, category="carpet")[0])
    b = _paths(select_known_anomalies(test, 5, seed=0, category="grid")[0])
    assert a != b


def test_one_class_removes_all_images_of_the_type() -> None:
    test = _test_set()
    known, remaining = select_known_anomalies(
        test, 3, seed=0, category="carpet", mode="one_class", defect_type="hole"
    )
    assert len(known) == 3 and {s.defect_type for s in known} == {"hole"}
    assert all(s.defect_type != "hole" for s in remaining)
    assert len(remaining) == len(test) - TYPES["hole"]
    assert {s.defect_type for s in remaining} == {"good", "color", "cut"}
    shuffled = list(test)
    random.Random(3).shuffle(shuffled)
    again, _ = select_known_anomalies(
        shuffled, 3, seed=0, category="carpet", mode="one_class", defect_type="hole"
    )
    assert _paths(again) == _paths(known)


def test_one_class_all_of_a_type() -> None:
    known, _ = select_known_anomalies(
        _test_set(), 4, seed=0, category="c", mode="one_class", defect_type="cut"
    )
    assert len(known) == 4


def test_errors() -> None:
    test = _test_set()
    with pytest.raises(SelectionError, match="16") as err:
        select_known_anomalies(test, 16, seed=0, category="carpet")
    assert "15" in str(err.value) and "carpet" in str(err.value)
    with pytest.raises(SelectionError) as err:
        select_known_anomalies(test, 2, seed=0, category="carpet", mode="one_class", defect_type="crack")
    msg = str(err.value)
    assert "crack" in msg and all(t in msg for t in TYPES)
    with pytest.raises(SelectionError, match="hole"):
        select_known_anomalies(test, 6, seed=0, category="carpet", mode="one_class", defect_type="hole")
    with pytest.raises(SelectionError, match="defect type"):
        select_known_anomalies(test, 2, seed=0, category="carpet", mode="one_class")
    with pytest.raises(SelectionError) as err:
        select_known_anomalies(test, 2, seed=0, category="carpet", mode="few_class")
    assert "few_class" in str(err.value) and "multi_class" in str(err.value) and "one_class" in str(err.value)
