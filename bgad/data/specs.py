"""Dataset specs: every fact about a dataset, read from ``protocols/datasets.toml``, one entry each.

A ``DatasetSpec`` says what the dataset is (title, where the paper got it), where it comes from
(downloaded archive, converted raw copy, generated, or the user's own folder), which reader lays it
out, whether it has pixel masks, its categories with their official counts, which categories are
textures, and, for archives, the download facts. Loaders, converters, the verifier, the data
commands, ``bgad-bench ls`` and the reports read these entries; nothing keeps a parallel list.
This module is light (no torch, no image libraries).
"""

from __future__ import annotations

import importlib.util
import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Literal

from bgad.registry import Registry

Source = Literal["archive", "raw", "generated", "user"]
Layout = Literal["mvtec", "btad", "synthetic", "folder"]


@dataclass(frozen=True)
class ArchiveSpec:
    """A downloadable archive: file name, sha256, where to get it, and a path that marks its root."""

    name: str
    filename: str
    sha256: str
    mirrors: tuple[str, ...]
    homepage: str
    marker: str = ""


@dataclass(frozen=True)
class RawPackage:
    """A Python package that ships a dataset's raw copy: its pip name and the copy's folder inside the
    installed package (``module/sub/folder``)."""

    pip: str
    folder: str

    def installed_copy(self) -> Path | None:
        """The raw copy's folder when the package is installed in this environment, else None."""
        module, _, sub = self.folder.partition("/")
        found = importlib.util.find_spec(module)
        for location in (found.submodule_search_locations or []) if found else []:
            if (Path(location) / sub).is_dir():
                return Path(location) / sub
        return None


@dataclass(frozen=True)
class Counts:
    """Official image counts of one category; None where the number is not fixed (a seeded split)."""

    train: int | None
    test_normal: int | None
    test_anomalous: int | None


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    title: str
    paper: str
    source: Source
    layout: Layout
    pixel_masks: bool
    texture: frozenset[str]
    counts: dict[str, Counts]
    defect_types: dict[str, tuple[str, ...]]
    archive: ArchiveSpec | None = None
    raw_package: RawPackage | None = None

    @property
    def categories(self) -> tuple[str, ...]:
        """The official categories (empty for a user folder: whatever the folder holds)."""
        return tuple(self.counts)

    def kind(self, category: str) -> Literal["texture", "object"]:
        return "texture" if category in self.texture else "object"

    def describe(self) -> str:
        masks = "pixel masks" if self.pixel_masks else "image labels only"
        cats = (
            f"{len(self.counts)} categor{'y' if len(self.counts) == 1 else 'ies'}"
            if self.counts
            else "your categories"
        )
        return f"{self.title}: {self.paper}; {cats}, {masks}; {self.source}"


def _counts(raw: list[int]) -> Counts:
    train, normal, anomalous = (None if v < 0 else int(v) for v in raw)
    return Counts(train, normal, anomalous)


def _load() -> Registry[DatasetSpec]:
    text = resources.files("bgad.protocols").joinpath("datasets.toml").read_text()
    registry: Registry[DatasetSpec] = Registry("dataset")
    for name, entry in tomllib.loads(text).items():
        archive = entry.get("archive")
        registry.register(
            name,
            DatasetSpec(
                name=name,
                title=entry["title"],
                paper=entry["paper"],
                source=entry["source"],
                layout=entry["layout"],
                pixel_masks=bool(entry["pixel_masks"]),
                texture=frozenset(entry.get("texture", [])),
                counts={cat: _counts(v) for cat, v in entry.get("counts", {}).items()},
                defect_types={cat: tuple(v) for cat, v in entry.get("defect_types", {}).items()},
                archive=ArchiveSpec(name=name, **{**archive, "mirrors": tuple(archive["mirrors"])})
                if archive
                else None,
                raw_package=RawPackage(**entry["raw_package"]) if "raw_package" in entry else None,
            ),
        )
    return registry


#: Every dataset the suite knows, complete on import.
DATASET_SPECS: Registry[DatasetSpec] = _load()


def dataset_names(source: Source | None = None) -> tuple[str, ...]:
    """Registered dataset names, optionally only those of one source (e.g. the downloadable ones)."""
    return tuple(n for n in DATASET_SPECS.names() if source is None or DATASET_SPECS.get(n).source == source)
