"""Which known anomalies a cell trains on: a pure function of the file list, the rule and the seed.

Every method of a cell (NFAD included) is tested on the same reduced test set, so the selection is
made once per (category, rule, seed), independent of run order (docs/method.md §3, "Which anomalies are
known").
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import numpy as np

from bgad.data.samples import Sample
from bgad.errors import UserError

RULES = ("multi_class", "one_class")


class SelectionError(UserError, ValueError):
    """The category cannot give the requested known anomalies."""


def select_known_anomalies(
    test: Sequence[Sample],
    k: int,
    seed: int,
    category: str,
    mode: str = "multi_class",
    defect_type: str | None = None,
    train_types: Sequence[str] | None = None,
    test_types: Sequence[str] | None = None,
) -> tuple[list[Sample], list[Sample]]:
    """Return (known anomalies, reduced test set).

    ``multi_class``: ⌊k/T⌋ per defect type (T types), the remainder drawn from the rest at random (the
    released code's rule); the chosen images leave the test set. ``one_class``: k images of
    ``defect_type`` only, and every image of that type leaves the test set (only unseen types remain).
    ``train_types`` restricts the types known anomalies are drawn from (paper Table 7's easy types for
    the unseen subset); ``test_types`` keeps only those anomalous types in the test set (its hard
    types); normal test images always stay.
    """
    if mode not in RULES:
        raise SelectionError(f"unknown anomaly selection rule {mode!r}; known: {', '.join(RULES)}")
    ordered = sorted(test, key=lambda s: str(s.image_path))
    rng = np.random.default_rng([seed, zlib.crc32(category.encode())])
    anomalous = [s for s in ordered if s.is_anomalous]
    wanted = {defect_type} if mode == "one_class" and defect_type else set()
    _require_defect_types(category, anomalous, wanted | set(train_types or []) | set(test_types or []))
    if mode == "one_class":
        if defect_type is None:
            raise SelectionError("the one_class rule needs a defect type (--set anomaly_defect_type=...)")
        pool = [s for s in anomalous if s.defect_type == defect_type]
        remaining = [s for s in ordered if s.defect_type != defect_type]
    else:
        pool = [s for s in anomalous if train_types is None or s.defect_type in set(train_types)]
    if k > len(pool):
        raise SelectionError(
            f"{k} known anomalies asked, but category {category!r} has {len(pool)} anomalous test images"
            f"{f' of type {defect_type!r}' if mode == 'one_class' else ''} to draw from"
        )
    chosen = _draw(pool, k, rng, per_type=mode == "multi_class")
    known = [pool[i] for i in sorted(chosen)]
    if mode == "multi_class":
        known_paths = {s.image_path for s in known}
        remaining = [s for s in ordered if s.image_path not in known_paths]
    if test_types is not None:
        keep = set(test_types)
        remaining = [s for s in remaining if not s.is_anomalous or s.defect_type in keep]
    return known, remaining


def _require_defect_types(category: str, anomalous: list[Sample], named: set[str]) -> None:
    """Stop on a defect type the category does not have: a misspelt type in a protocol or ``--set``
    would otherwise draw from, or keep, nothing of it without a word."""
    available = sorted({s.defect_type for s in anomalous})
    missing = sorted(named - set(available))
    if missing:
        raise SelectionError(
            f"category {category!r} lacks the defect type(s) {', '.join(missing)}; it has: {', '.join(available)}"
        )


def _draw(pool: list[Sample], k: int, rng: np.random.Generator, per_type: bool) -> set[int]:
    """⌊k/T⌋ per defect type of the pool (when ``per_type``), the rest at random from what is left."""
    chosen: set[int] = set()
    types = sorted({s.defect_type for s in pool})
    if per_type and types:
        for t in types:
            idx = [i for i, s in enumerate(pool) if s.defect_type == t]
            take = min(k // len(types), len(idx))
            chosen.update(int(i) for i in rng.choice(idx, size=take, replace=False))
    rest = [i for i in range(len(pool)) if i not in chosen]
    if k - len(chosen) > 0:
        chosen.update(int(i) for i in rng.choice(rest, size=k - len(chosen), replace=False))
    return chosen
