"""Protocols as data: one TOML file per paper table under ``protocols/`` (installed as ``bgad.protocols``).

A protocol names only registered things and literal values: datasets and categories, methods, seeds,
a profile, RunConfig settings, and optional grid axes (cartesian product), named variants, one cell
per defect type (``expand = "defect_types"``, optionally narrowed to listed types per category), and
Table 7's easy/hard subsets. Loading validates every key strictly; nothing here imports torch.
"""

from __future__ import annotations

from importlib import resources
from importlib.abc import Traversable
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, PlainValidator, field_validator

from bgad.bench.config import ConfigError, DataFile, M, check_settings, parse_data_file
from bgad.data.specs import DATASET_SPECS


class Variant(DataFile):
    """A named set of settings (e.g. an ablation row); ``methods`` narrows the protocol's methods."""

    name: str
    settings: dict[str, Any] = {}
    methods: tuple[str, ...] | None = None


class PublishedRef(DataFile):
    """Where the paper prints this protocol's numbers. ``setting`` is formatted with the cell's settings
    (plus ``type``: the defect type, or ``mean`` for a category's mean over types); ``variant`` limits it
    to one variant; ``methods`` (their names in the published tables) to some of the table's methods,
    so a wide table can be cited for the columns that matter here."""

    source: str
    table: str
    setting: str
    variant: str | None = None
    methods: tuple[str, ...] | None = None


def _categories(value: Any) -> tuple[str, ...] | None:
    """``"all"`` (None: every category of the dataset) or a list of category names."""
    if value is None or value == "all":
        return None
    if isinstance(value, list | tuple) and all(isinstance(c, str) for c in value):
        return tuple(value)
    raise ValueError('give "all" or a list of category names')


Subset = Literal["easy", "hard", "all"]


class ProtocolFile(DataFile):
    """The keys of a protocol file (``protocols/<name>.toml``), their types and defaults."""

    description: str
    methods: tuple[str, ...]
    datasets: dict[str, Annotated[tuple[str, ...] | None, PlainValidator(_categories)]]
    source: str = ""
    seeds: tuple[int, ...] = (0, 42, 100)
    profile: str = "paper"
    settings: dict[str, Any] = {}
    grid: dict[str, Annotated[tuple[Any, ...], Field(min_length=1)]] = {}  # cartesian product
    variants: tuple[Variant, ...] = (Variant(name="default"),)
    # one table per variant (DRA's 10 and 1 known) instead of the variants as column groups of one
    variant_tables: bool = False
    expand: Literal["defect_types"] | None = None  # one cell per defect type
    # category -> the defect types to expand (default: all of the category's); with expand only
    defect_types: dict[str, Annotated[tuple[str, ...], Field(min_length=1)]] = {}
    subsets: dict[Literal["train", "test"], Subset] | None = None  # Table 7's easy/hard types
    metrics: tuple[str, ...] = ("image_auroc", "pixel_auroc", "pro")
    published: tuple[PublishedRef, ...] = ()

    @field_validator("variants")
    @classmethod
    def _default_variant(cls, variants: tuple[Variant, ...]) -> tuple[Variant, ...]:
        """``variants = []`` means the one default variant, as leaving the key out does."""
        return variants or (Variant(name="default"),)


class Protocol(ProtocolFile):
    """A loaded protocol: its file's content, its name and where it came from."""

    name: str
    path: str


class DefectSubsets(DataFile):
    """One category's easy and hard defect types (real folder names)."""

    easy: list[str]
    hard: list[str]


class DefectSubsetsFile(DataFile):
    """``protocols/mvtec_defect_subsets.toml``: Table 7 as printed and per category as folder names."""

    abbreviations: dict[str, str] = {}  # printed text -> folder name
    categories: dict[str, DefectSubsets]


def _protocol_dir() -> Traversable:
    return resources.files("bgad.protocols")


# Data files beside the protocols that are not protocols themselves.
NOT_PROTOCOLS = {"mvtec_defect_subsets", "regression", "datasets"}


def protocol_names() -> list[str]:
    names = (p.name.removesuffix(".toml") for p in _protocol_dir().iterdir() if p.name.endswith(".toml"))
    return sorted(n for n in names if n not in NOT_PROTOCOLS)


def read_data_file(model: type[M], name: str) -> M:
    """The shipped data file ``protocols/<name>.toml`` as ``model`` (validated; errors name the file)."""
    res = _protocol_dir().joinpath(f"{name}.toml")
    if not res.is_file():
        raise ConfigError(f"protocols/{name}.toml is missing: reinstall the package (pip install -e .)")
    return parse_data_file(model, res.read_text(), f"protocols/{name}.toml")


def load_protocol(name_or_path: str) -> Protocol:
    """Read and validate a protocol (a name under ``protocols/`` or a TOML path); every error names
    the file, the table and the offending key."""
    path = Path(name_or_path)
    if path.suffix == ".toml" and path.exists():
        text, origin, name = path.read_text(), str(path), path.stem
    elif name_or_path in protocol_names():
        text = _protocol_dir().joinpath(f"{name_or_path}.toml").read_text()
        origin, name = f"protocols/{name_or_path}.toml", name_or_path
    else:
        raise ConfigError(
            f"unknown protocol {name_or_path!r}; known protocols: {', '.join(protocol_names())}"
        )
    content = parse_data_file(ProtocolFile, text, origin)
    check_settings(content.settings, f"{origin} [settings]")
    for key, values in content.grid.items():
        for value in values:
            check_settings({key: value}, f"{origin} [grid]")
    for variant in content.variants:
        check_settings(variant.settings, f"{origin} variant {variant.name!r}")
    _check_defect_types(content, origin)
    return Protocol(**dict(content), name=name, path=origin)


def _check_defect_types(content: ProtocolFile, origin: str) -> None:
    """``[defect_types]`` narrows the per-type expansion (so it needs ``expand``); each entry names a
    category of the protocol's datasets and types it has by the dataset facts (``protocols/datasets.toml``),
    so a misspelt name stops the file, not a cell."""
    if content.defect_types and content.expand != "defect_types":
        raise ConfigError(
            f'{origin} [defect_types]: needs expand = "defect_types" (it narrows the types expanded)'
        )
    for category, types in content.defect_types.items():
        specs = [
            DATASET_SPECS.get(ds)
            for ds, allowed in content.datasets.items()
            if ds in DATASET_SPECS and category in (allowed or DATASET_SPECS.get(ds).categories)
        ]
        if not specs:
            raise ConfigError(
                f"{origin} [defect_types]: {category!r} is no category of the protocol's datasets "
                f"({', '.join(content.datasets)})"
            )
        known = {t for spec in specs for t in spec.defect_types.get(category, ())}
        missing = [t for t in types if known and t not in known]
        if missing:
            raise ConfigError(
                f"{origin} [defect_types]: {category} has no defect type(s) {', '.join(missing)}; "
                f"it has: {', '.join(sorted(known))}"
            )


def defect_subsets() -> dict[str, dict[str, list[str]]]:
    """Paper Table 7's easy and hard defect types per MVTec category (real folder names)."""
    subsets = read_data_file(DefectSubsetsFile, "mvtec_defect_subsets")
    return {category: types.model_dump() for category, types in subsets.categories.items()}


def adhoc_protocol(dataset: str) -> Protocol:
    """The grid of a plain ``bgad-bench run`` (no --protocol): BGAD and NFAD, seed 0, quick profile."""
    return Protocol(
        name="adhoc",
        description="ad-hoc grid from the command line",
        methods=("bgad", "nfad"),
        seeds=(0,),
        profile="quick",
        datasets={dataset: None},
        path="command line",
    )
