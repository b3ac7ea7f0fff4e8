"""Which known anomalies a cell trains on: a pure function of the file list, the rule and the seed.

Every method of a cell (NFAD included) is tested on the same reduced test set, so the selection is
made once per (category, rule, seed), independent of run order (METHOD.md §6).
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import numpy as np

from bgad.data.samples import Sample


class SelectionError(ValueError):
    """The category cannot give the requested known anomalies."""


def select_known_anomalies(
    test: Sequence[Sample],
    k: int,
    seed: int,
    category: str,
    mode: str = "multi_class",
    defect_type: str | None = None,
) -> tuple[list[Sample], list[Sample]]:
    """Return (known anomalies, reduced test set).

    ``multi_class``: ⌊k/T⌋ per defect type (T types), the remainder drawn from the rest at random (the
    released code's rule); the chosen images leave the test set. ``one_class``: k images of
    ``defect_type`` only, and every image of that type leaves the test set (only unseen types remain).
    """
    ordered = sorted(test, key=lambda s: str(s.image_path))
    rng = np.random.default_rng([seed, zlib.crc32(category.encode())])
    anomalous = [s for s in ordered if s.is_anomalous]
    if mode == "one_class":
        if defect_type is None:
            raise SelectionError("the one_class rule needs a defect type (--set anomaly_defect_type=...)")
        pool = [s for s in anomalous if s.defect_type == defect_type]
        if not pool:
            types = sorted({s.defect_type for s in anomalous})
            raise SelectionError(
                f"category {category!r} has no defect type {defect_type!r}; it has: {', '.join(types)}"
            )
        if k > len(pool):
            raise SelectionError(
                f"{k} known anomalies asked of type {defect_type!r}, but {category!r} has {len(pool)}"
            )
        known = [pool[i] for i in sorted(rng.choice(len(pool), size=k, replace=False))]
        remaining = [s for s in ordered if s.defect_type != defect_type]
        return known, remaining
    if mode != "multi_class":
        raise SelectionError(f"unknown anomaly selection rule {mode!r}; known: multi_class, one_class")
    if k > len(anomalous):
        raise SelectionError(
            f"{k} known anomalies asked, but category {category!r} has {len(anomalous)} anomalous test images"
        )
    types = sorted({s.defect_type for s in anomalous})
    chosen: set[int] = set()
    per_type = k // len(types) if types else 0
    for t in types:
        idx = [i for i, s in enumerate(anomalous) if s.defect_type == t]
        take = min(per_type, len(idx))
        chosen.update(int(i) for i in rng.choice(idx, size=take, replace=False))
    rest = [i for i in range(len(anomalous)) if i not in chosen]
    extra = k - len(chosen)
    if extra > 0:
        chosen.update(int(i) for i in rng.choice(rest, size=extra, replace=False))
    known = [anomalous[i] for i in sorted(chosen)]
    known_paths = {s.image_path for s in known}
    return known, [s for s in ordered if s.image_path not in known_paths]
