"""Plain-data description of one category of an MVTec-layout dataset.

Every reader (MVTec layout, BTAD native layout, converted datasets, the synthetic set) returns a
:class:`CategoryData`; everything downstream (feature cache, known-anomaly selection, training,
metrics, provenance) reads only this, never the folder layout.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

NORMAL_TYPE = "good"
#: Below this many normal or anomalous test images an AUROC moves in steps too coarse to compare.
MIN_TEST_IMAGES = 10


@dataclass(frozen=True)
class Sample:
    """One image with its label. ``defect_type`` is ``"good"`` for normal images."""

    image_path: Path
    label: int
    defect_type: str
    mask_path: Path | None = None
    split: Literal["train", "test"] = "test"

    @property
    def is_anomalous(self) -> bool:
        return self.label == 1


@dataclass(frozen=True)
class CategoryData:
    """The samples of one category. ``train`` holds normal images only; ``test`` holds both."""

    dataset: str
    category: str
    root: Path
    train: tuple[Sample, ...]
    test: tuple[Sample, ...]
    kind: Literal["texture", "object"] = "object"
    has_pixel_masks: bool = True
    extra: dict = field(default_factory=dict, compare=False)

    @property
    def defect_types(self) -> list[str]:
        return sorted({s.defect_type for s in self.test if s.is_anomalous})

    def manifest_rows(self) -> list[dict]:
        """Relative path, split, label, defect type and mask of every sample, in sample order."""
        return [
            {
                "path": _relative(s.image_path, self.root),
                "split": s.split,
                "label": s.label,
                "defect_type": s.defect_type,
                "mask": _relative(s.mask_path, self.root) if s.mask_path else None,
            }
            for s in (*self.train, *self.test)
        ]

    def manifest(self) -> list[dict]:
        """The manifest rows sorted by (split, path): the file list that identifies a split."""
        return sorted(self.manifest_rows(), key=lambda r: (r["split"], r["path"]))

    def manifest_sha256(self) -> str:
        """Hash of the file list (not the pixel content): identifies the split a result was made on."""
        blob = json.dumps(self.manifest(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()


def _relative(path: Path, root: Path) -> str:
    try:
        return Path(path).relative_to(root).as_posix()
    except ValueError:
        return Path(path).as_posix()
