"""Protocols as data: one TOML file per paper table under ``protocols/`` (installed as ``bgad.protocols``).

A protocol names only registered things and literal values: datasets and categories, methods, seeds,
a profile, RunConfig settings, and optional grid axes (cartesian product), named variants, one cell
per defect type (``expand = "defect_types"``), and Table 7's easy/hard subsets. Loading validates
every key strictly; nothing here imports torch.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from bgad.bench.config import ConfigError, check_settings

PROTOCOL_KEYS = {
    "description",
    "source",
    "methods",
    "seeds",
    "profile",
    "datasets",
    "settings",
    "grid",
    "variants",
    "expand",
    "subsets",
    "metrics",
    "published",
}
PUBLISHED_KEYS = {"source", "table", "setting", "variant"}
VARIANT_KEYS = {"name", "settings", "methods"}
SUBSET_KEYS = {"train", "test"}
SUBSET_VALUES = {"easy", "hard", "all"}
EXPAND_VALUES = {"defect_types"}


@dataclass(frozen=True)
class Variant:
    """A named set of settings (e.g. an ablation row); ``methods`` narrows the protocol's methods."""

    name: str
    settings: dict[str, Any] = field(default_factory=dict)
    methods: tuple[str, ...] | None = None


@dataclass(frozen=True)
class PublishedRef:
    """Where the paper prints this protocol's numbers. ``setting`` is formatted with the cell's settings
    (plus ``type``: the defect type, or ``mean`` for a category's mean over types); ``variant`` limits it."""

    source: str
    table: str
    setting: str
    variant: str | None = None


@dataclass(frozen=True)
class Protocol:
    name: str
    description: str
    source: str
    methods: tuple[str, ...]
    seeds: tuple[int, ...]
    profile: str
    datasets: dict[str, tuple[str, ...] | None]  # None: every category of the dataset
    settings: dict[str, Any]
    grid: dict[str, tuple[Any, ...]]
    variants: tuple[Variant, ...]
    expand: str | None
    subsets: dict[str, str] | None
    metrics: tuple[str, ...]
    path: str
    published: tuple[PublishedRef, ...] = ()


def _protocol_dir():
    return resources.files("bgad.protocols")


# Data files beside the protocols that are not protocols themselves.
NOT_PROTOCOLS = {"mvtec_defect_subsets", "regression", "datasets"}


def protocol_names() -> list[str]:
    names = (p.name.removesuffix(".toml") for p in _protocol_dir().iterdir() if p.name.endswith(".toml"))
    return sorted(n for n in names if n not in NOT_PROTOCOLS)


def _read(name_or_path: str) -> tuple[dict, str, str]:
    path = Path(name_or_path)
    if path.suffix == ".toml" and path.exists():
        return tomllib.loads(path.read_text()), str(path), path.stem
    res = _protocol_dir().joinpath(f"{name_or_path}.toml")
    if name_or_path not in protocol_names() or not res.is_file():
        raise ConfigError(
            f"unknown protocol {name_or_path!r}; known protocols: {', '.join(protocol_names())}"
        )
    return tomllib.loads(res.read_text()), f"protocols/{name_or_path}.toml", name_or_path


def _check_keys(table: dict, allowed: set[str], where: str) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {', '.join(map(repr, unknown))}; allowed: {', '.join(sorted(allowed))}"
        )


def load_protocol(name_or_path: str) -> Protocol:
    """Read and validate a protocol; every error names the file and the offending key."""
    try:
        data, origin, name = _read(name_or_path)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{name_or_path}: not valid TOML ({exc})") from exc
    _check_keys(data, PROTOCOL_KEYS, origin)
    for required in ("description", "methods", "datasets"):
        if required not in data:
            raise ConfigError(f"{origin}: missing required key {required!r}")
    settings = dict(data.get("settings", {}))
    check_settings(settings, f"{origin} [settings]")
    grid = _grid(data, origin)
    variants = _variants(data, origin)
    expand = data.get("expand")
    if expand is not None and expand not in EXPAND_VALUES:
        raise ConfigError(f"{origin}: expand = {expand!r}; allowed: {', '.join(sorted(EXPAND_VALUES))}")
    subsets = data.get("subsets")
    if subsets is not None:
        _check_keys(subsets, SUBSET_KEYS, f"{origin} [subsets]")
        bad = {k: v for k, v in subsets.items() if v not in SUBSET_VALUES}
        if bad:
            raise ConfigError(
                f"{origin} [subsets]: {bad}; values must be one of {', '.join(sorted(SUBSET_VALUES))}"
            )
    datasets = _datasets(data, origin)
    published = _published(data, origin)
    return Protocol(
        published=tuple(published),
        name=name,
        description=data["description"],
        source=data.get("source", ""),
        methods=tuple(data["methods"]),
        seeds=tuple(int(s) for s in data.get("seeds", [0, 42, 100])),
        profile=data.get("profile", "paper"),
        datasets=datasets,
        settings=settings,
        grid=grid,
        variants=tuple(variants) or (Variant("default"),),
        expand=expand,
        subsets=subsets,
        metrics=tuple(data.get("metrics", ["image_auroc", "pixel_auroc", "pro"])),
        path=origin,
    )


def _grid(data: dict, origin: str) -> dict[str, tuple[Any, ...]]:
    grid = {k: tuple(v) for k, v in data.get("grid", {}).items()}
    for key, values in grid.items():
        if not values:
            raise ConfigError(f"{origin} [grid]: axis {key!r} has no values")
        for value in values:
            check_settings({key: value}, f"{origin} [grid]")
    return grid


def _variants(data: dict, origin: str) -> list[Variant]:
    variants = []
    for i, raw in enumerate(data.get("variants", [])):
        _check_keys(raw, VARIANT_KEYS, f"{origin} [[variants]] #{i + 1}")
        if "name" not in raw:
            raise ConfigError(f"{origin} [[variants]] #{i + 1}: missing 'name'")
        check_settings(raw.get("settings", {}), f"{origin} variant {raw['name']!r}")
        methods = tuple(raw["methods"]) if "methods" in raw else None
        variants.append(Variant(raw["name"], dict(raw.get("settings", {})), methods))
    return variants


def _datasets(data: dict, origin: str) -> dict[str, tuple[str, ...] | None]:
    datasets: dict[str, tuple[str, ...] | None] = {}
    for ds, cats in data["datasets"].items():
        if cats != "all" and not (isinstance(cats, list) and all(isinstance(c, str) for c in cats)):
            raise ConfigError(f'{origin} [datasets] {ds}: give "all" or a list of category names')
        datasets[ds] = None if cats == "all" else tuple(cats)
    return datasets


def _published(data: dict, origin: str) -> list[PublishedRef]:
    published = []
    for i, raw in enumerate(data.get("published", [])):
        _check_keys(raw, PUBLISHED_KEYS, f"{origin} [[published]] #{i + 1}")
        missing = sorted({"source", "table", "setting"} - set(raw))
        if missing:
            raise ConfigError(f"{origin} [[published]] #{i + 1}: missing {', '.join(missing)}")
        published.append(PublishedRef(raw["source"], raw["table"], raw["setting"], raw.get("variant")))
    return published


def defect_subsets() -> dict[str, dict[str, list[str]]]:
    """Paper Table 7's easy and hard defect types per MVTec category (real folder names)."""
    res = _protocol_dir().joinpath("mvtec_defect_subsets.toml")
    if not res.is_file():
        raise ConfigError(
            "protocols/mvtec_defect_subsets.toml is missing: the hard/unseen subset protocols need it"
        )
    return tomllib.loads(res.read_text())["categories"]


def adhoc_protocol(dataset: str) -> Protocol:
    """The grid of a plain ``bgad-bench run`` (no --protocol): BGAD and NFAD, seed 0, quick profile."""
    return Protocol(
        name="adhoc",
        description="ad-hoc grid from the command line",
        source="",
        methods=("bgad", "nfad"),
        seeds=(0,),
        profile="quick",
        datasets={dataset: None},
        settings={},
        grid={},
        variants=(Variant("default"),),
        expand=None,
        subsets=None,
        metrics=("image_auroc", "pixel_auroc", "pro"),
        path="command line",
    )
