"""Expand a protocol into cells: plain-data units of work whose id is the resume, store and join key.

A cell's id (``bgad.bench.store.cell_id``) hashes the settings that can change its result (those away
from their defaults: ``RunConfig.result_hash``; run settings such as paths, threads and the device are
left out), the data's content digest (file list and bytes), the bytes of a ``--backbone-weights`` file
and the result version of the code; the protocol name is left out, so a cell shared by two tables runs
once.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bgad.bench.config import (
    AXES,
    CELL_SETTINGS,
    KNOWN_SETTINGS,
    RUN_SETTINGS,
    ConfigError,
    Layer,
    RunConfig,
    resolve_config,
)
from bgad.bench.method_registry import METHODS, methods_using
from bgad.bench.protocols import Protocol, Variant, defect_subsets
from bgad.bench.store import cell_id, cell_name_prefix, loads_weights_file, weights_file_sha256
from bgad.data.content import content_sha256
from bgad.data.datasets import DATASETS, list_dataset_categories, load_category
from bgad.data.images import DatasetError
from bgad.data.specs import DATASET_SPECS


@dataclass(frozen=True)
class Cell:
    protocol: str
    variant: str
    config: RunConfig
    data_sha256: str | None  # content digest; None: planned from the dataset's facts, data not on disk
    grid_label: str = ""  # the grid point / variant, so two cells never share a label
    weights_sha256: str | None = None  # of the --backbone-weights file; None: the cell loads none

    @property
    def id(self) -> str:
        """The cell id; without the data a stand-in that still tells apart cells of other settings."""
        if self.data_sha256 is None:
            return f"{cell_name_prefix(self.config)}-{self.config.result_hash()}-(dataset not prepared)"
        return cell_id(self.config, self.data_sha256, self.weights_sha256)

    @property
    def label(self) -> str:
        c = self.config
        extra = f" type={c.anomaly_defect_type}" if c.anomaly_defect_type else ""
        point = f" [{self.grid_label}]" if self.grid_label else ""
        return f"{c.dataset}/{c.category}{extra} {c.method} seed {c.seed}{point}"


def _grid_label(grid_point: dict[str, Any], variant: Variant) -> str:
    parts = [] if variant.name == "default" else [variant.name]
    parts += [f"{k}={v}" for k, v in grid_point.items()]
    return " ".join(parts)


def check_overrides_apply(overrides: dict[str, Any], methods: list[str]) -> None:
    """A --set that no planned method uses is a mistake (e.g. ``lr`` for PaDiM alone): say so."""
    for key in overrides:
        if key in CELL_SETTINGS or key in RUN_SETTINGS or key not in KNOWN_SETTINGS:
            continue
        if not any(key in METHODS.get(m).params.model_fields for m in methods):
            users = ", ".join(methods_using(key))
            raise ConfigError(
                f"--set {key}: none of the planned methods ({', '.join(methods)}) has this setting; "
                f"it belongs to {users}"
            )


def plan(
    protocol: Protocol,
    dataset: str | None = None,
    categories: list[str] | None = None,
    methods: list[str] | None = None,
    seeds: list[int] | None = None,
    profile: str | None = None,
    overrides: dict[str, Any] | None = None,
    data_root: Path | None = None,
    require_data: bool = True,
) -> list[Cell]:
    """All cells of ``protocol`` on one dataset, narrowed by the given categories, methods and seeds.

    With ``require_data=False`` (``--dry-run``) a dataset that is not on disk is planned from its
    facts (official categories and defect types); until the data is there those cells have a
    stand-in id that tells apart their settings, not their data.
    """
    run_overrides = dict(overrides or {})
    dataset = _choose_dataset(protocol, dataset)
    if dataset not in DATASETS:
        DATASETS.get(dataset)  # raises with the list of known datasets
    wanted_methods = list(methods or protocol.methods)
    for m in wanted_methods:
        METHODS.get(m)
    check_overrides_apply(run_overrides, wanted_methods)
    chosen, on_disk = _categories(protocol, dataset, categories, data_root, require_data)
    subsets = defect_subsets() if protocol.subsets else None
    grid_axis = _grid_points(protocol, run_overrides)
    cells: list[Cell] = []
    for category in chosen:
        digest, defect_types = _category_identity(dataset, category, data_root, on_disk)
        type_axis = _type_axis(protocol, category, defect_types)
        subset_settings = _subset_settings(protocol, category, subsets)
        for variant in protocol.variants:
            variant_methods = [m for m in wanted_methods if variant.methods is None or m in variant.methods]
            for grid_point, type_point, method, seed in itertools.product(
                grid_axis, type_axis, variant_methods, list(seeds or protocol.seeds)
            ):
                axes = {"method": method, "dataset": dataset, "category": category, "seed": seed}
                layers = _layers(
                    protocol, variant, grid_point, {**type_point, **subset_settings}, axes, data_root
                )
                cfg = resolve_config(profile or protocol.profile, run_overrides, layers)
                weights = weights_file_sha256(cfg.backbone_weights) if loads_weights_file(cfg) else None
                label = _grid_label(grid_point, variant)
                cells.append(Cell(protocol.name, variant.name, cfg, digest, label, weights))
    return cells


def _category_identity(
    dataset: str, category: str, data_root: Path | None, on_disk: bool
) -> tuple[str | None, list[str]]:
    """The category's content digest and defect types; from the dataset's facts when it is not on disk."""
    if not on_disk:
        return None, list(DATASET_SPECS.get(dataset).defect_types.get(category, ()))
    data = load_category(dataset, category, data_root)
    return content_sha256(data), data.defect_types


def _type_axis(protocol: Protocol, category: str, available: list[str]) -> list[dict[str, str]]:
    """One point per defect type of the category (``expand``), or the protocol's listed ones; a listed
    type the category's data lacks is an error naming the file, never a cell that fails later."""
    if protocol.expand != "defect_types":
        return [{}]
    wanted = list(protocol.defect_types.get(category, available))
    missing = [t for t in wanted if t not in available]
    if missing:
        raise ConfigError(
            f"{protocol.path} [defect_types]: category {category!r} has no defect type(s) "
            f"{', '.join(missing)}; it has: {', '.join(available)}"
        )
    return [{"anomaly_defect_type": t} for t in wanted]


def _layers(
    protocol: Protocol,
    variant: Variant,
    grid_point: dict[str, Any],
    defect_point: dict[str, Any],
    axes: dict[str, Any],
    data_root: Path | None,
) -> list[Layer]:
    """A cell's settings, each layer named by where it comes from; an axis by its option, so a bad
    value (``--seed -1``) names the option."""
    where = protocol.path
    return [
        (f"{where} [settings]", protocol.settings),
        (f"{where} variant {variant.name!r}", variant.settings),
        (f"{where} [grid]", grid_point),
        (f"{where} (defect type)", defect_point),
        *[(f"{AXES[name]} or the protocol", {name: value}) for name, value in axes.items()],
        ("--data-root", {"data_root": str(data_root)} if data_root else {}),
    ]


def _grid_points(protocol: Protocol, overrides: dict[str, Any]) -> list[dict[str, Any]]:
    """The protocol's grid points; ``--set`` of a grid axis keeps that one value (no duplicate cells)."""
    axes = {k: [overrides[k]] if k in overrides else list(v) for k, v in protocol.grid.items()}
    return [dict(zip(axes, combo, strict=True)) for combo in itertools.product(*axes.values())]


def _categories(
    protocol: Protocol, dataset: str, categories: list[str] | None, data_root: Path | None, require_data: bool
) -> tuple[list[str], bool]:
    """The categories to plan, and whether the dataset is on disk (else: planned from its facts)."""
    allowed = protocol.datasets[dataset]
    try:
        available, on_disk = list_dataset_categories(dataset, data_root), True
    except DatasetError:
        if require_data or not DATASET_SPECS.get(dataset).categories:
            raise
        available, on_disk = list(DATASET_SPECS.get(dataset).categories), False
    chosen = list(categories or allowed or available)
    for c in chosen:
        if c not in available:
            raise ConfigError(
                f"unknown category {c!r} of dataset {dataset!r}; known categories: {', '.join(available)}"
            )
        if allowed is not None and c not in allowed:
            raise ConfigError(
                f"protocol {protocol.name!r} does not use category {c!r}; it uses: {', '.join(allowed)}"
            )
    return chosen, on_disk


def _choose_dataset(protocol: Protocol, dataset: str | None) -> str:
    names = list(protocol.datasets)
    if dataset is None:
        if len(names) == 1:
            return names[0]
        raise ConfigError(
            f"protocol {protocol.name!r} covers several datasets; choose one with --dataset: {', '.join(names)}"
        )
    if dataset not in protocol.datasets:
        raise ConfigError(
            f"protocol {protocol.name!r} does not cover dataset {dataset!r}; it covers: {', '.join(names)}"
        )
    return dataset


def _subset_settings(protocol: Protocol, category: str, subsets: dict | None) -> dict[str, str]:
    if not protocol.subsets or subsets is None:
        return {}
    if category not in subsets:
        raise ConfigError(
            f"protocol {protocol.name!r} needs Table 7 subsets, but category {category!r} has none"
        )
    return {k: v for k, v in subset_types(protocol, subsets[category]).items() if v is not None}


def subset_types(protocol: Protocol, category_subsets: dict) -> dict[str, str | None]:
    """The Table 7 type subsets a protocol gives one category: comma-joined types, None for all (the
    planner sets them, the report matches records by them)."""
    return {
        key: None if which == "all" else ",".join(category_subsets[which])
        for key, which in (
            ("train_types", protocol.subsets.get("train", "all")),
            ("test_types", protocol.subsets.get("test", "all")),
        )
    }
