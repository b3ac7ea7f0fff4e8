"""A cell's resolved configuration: profile < method defaults < protocol < command line, validated.

``RunConfig`` is three typed parts (``bgad.bench.params``): the cell (method, data, input, known
anomalies, seed), the method's own parameters, and run-level settings (threads, device, paths) that
never change a number. Settings are read as ``cfg.lr``; a setting of another method is an
AttributeError, not a silent default. Every value is validated where it enters, and an error names
the setting, what is allowed and where the value came from (profile file, protocol, ``--set``).
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, get_args

from pydantic import ValidationError

from bgad.bench.method_registry import METHODS, MethodSpec
from bgad.bench.params import PARAMETER_MODELS, CellSettings, RunSettings, Settings, limits_in_words
from bgad.errors import UserError
from bgad.registry import UnknownNameError


class ConfigError(UserError, ValueError):
    """A bad option, profile file or override; the message names it and where it came from."""


#: Chosen by the plan (protocol, --method/--dataset/--category/--seed/--profile), never by --set.
AXES = {
    "method": "--method",
    "dataset": "--dataset",
    "category": "--category",
    "seed": "--seed",
    "profile": "--profile",
}
RUN_SETTINGS = frozenset(RunSettings.model_fields)
CELL_SETTINGS = frozenset(CellSettings.model_fields)
PARAMETERS = frozenset(name for model in PARAMETER_MODELS for name in model.model_fields)
KNOWN_SETTINGS = RUN_SETTINGS | CELL_SETTINGS | PARAMETERS
#: Kept for readers of old code and records: the settings that are not part of a cell's id.
NOT_RESULT_SETTINGS = RUN_SETTINGS

Layer = tuple[str, dict[str, Any]]  # (where the values come from, the values)


@dataclass(frozen=True)
class RunConfig:
    """The cell's settings (``cell``), its method's parameters (``params``) and run settings (``run``)."""

    cell: CellSettings
    params: Settings
    run: RunSettings

    def __getattr__(self, name: str) -> Any:
        for part in ("cell", "params", "run"):
            model = object.__getattribute__(self, part)
            if name in type(model).model_fields:
                return getattr(model, name)
        method = object.__getattribute__(self, "cell").method
        raise AttributeError(f"{name!r} is not a setting of method {method!r}")

    @property
    def spec(self) -> MethodSpec:
        return METHODS.get(self.cell.method)

    def to_dict(self) -> dict[str, Any]:
        """All settings, flat (the form records, tasks and ``--set`` use)."""
        return {**self.cell.model_dump(), **self.params.model_dump(), **self.run.model_dump()}

    def result_hash(self) -> str:
        """Hash of the settings that can change the result and differ from their model's default.

        Run settings are left out, and so are settings at their default value, so adding a setting
        (with a default that keeps the old behaviour) leaves every existing cell id valid. Changing
        a default's behaviour bumps ``bgad.bench.store.RESULT_VERSION`` instead.
        """
        spec = {}
        for model in (self.cell, self.params):
            defaults = type(model)()
            spec.update({k: v for k, v in model.model_dump().items() if v != getattr(defaults, k)})
        return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]

    def with_overrides(self, overrides: dict[str, Any], source: str = "command line") -> RunConfig:
        """A copy with ``overrides`` applied (validated; axes included, as a plan may set them)."""
        layers = [("resolved configuration", self.to_dict()), (source, dict(overrides))]
        return build_config(layers, allow_axes=True)

    @classmethod
    def of(cls, **settings: Any) -> RunConfig:
        """Defaults, with the given settings (a convenience for code and tests)."""
        return build_config([("arguments", settings)], allow_axes=True)

    @classmethod
    def from_dict(cls, settings: dict[str, Any], source: str = "record") -> RunConfig:
        """From a flat dict (a task, or a record's ``config``); settings of other methods are skipped."""
        return build_config([(source, dict(settings))], allow_axes=True)


def build_config(layers: list[Layer], allow_axes: bool = False) -> RunConfig:
    """Merge layers (later wins), check names, drop other methods' parameters, validate each part."""
    values: dict[str, Any] = {}
    origin: dict[str, str] = {}
    for source, layer in layers:
        for key, value in layer.items():
            _check_name(key, source, allow_axes)
            values[key], origin[key] = _none_words(key, value), source
    method = values.get("method", CellSettings.model_fields["method"].default)
    try:
        spec = METHODS.get(method)
    except UnknownNameError as exc:
        raise ConfigError(f"{exc} ({origin.get('method', 'default')})") from None
    parts = {
        "cell": (CellSettings, CELL_SETTINGS),
        "params": (spec.params, frozenset(spec.params.model_fields)),
        "run": (RunSettings, RUN_SETTINGS),
    }
    built = {}
    for part, (model, names) in parts.items():
        chosen = {k: v for k, v in values.items() if k in names}
        try:
            built[part] = model(**chosen)
        except ValidationError as exc:
            raise ConfigError(_explain(exc, origin, model)) from None
    return RunConfig(**built)


def _optional(key: str) -> bool:
    models = (CellSettings, RunSettings, *PARAMETER_MODELS)
    return any(
        key in m.model_fields and type(None) in get_args(m.model_fields[key].annotation) for m in models
    )


OPTIONAL_SETTINGS = frozenset(k for k in KNOWN_SETTINGS if _optional(k))


def _none_words(key: str, value: Any) -> Any:
    """``none``/``null``/empty for an optional setting mean None (left unset), as on the command line."""
    if key in OPTIONAL_SETTINGS and isinstance(value, str) and value.strip().lower() in {"none", "null", ""}:
        return None
    return value


def _check_name(key: str, source: str, allow_axes: bool) -> None:
    if key not in KNOWN_SETTINGS:
        import difflib

        close = difflib.get_close_matches(key, sorted(KNOWN_SETTINGS), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"unknown setting {key!r} ({source}).{hint} See `bgad-bench config --describe`.")
    if key in AXES and not allow_axes:
        raise ConfigError(f"setting {key!r} cannot be set here ({source}); use {AXES[key]}")


def _explain(exc: ValidationError, origin: dict[str, str], model: type[Settings]) -> str:
    """pydantic's errors in our words: setting, value, what is allowed, where it came from."""
    lines = []
    for err in exc.errors():
        key = str(err["loc"][0]) if err["loc"] else None
        if key is None:  # a rule between settings (e.g. warm-up longer than the schedule)
            message = str(err.get("ctx", {}).get("error", err["msg"]))
            sources = sorted({origin[k] for k in origin if k in message})
            lines.append(f"{message} ({', '.join(sources) or 'defaults'})")
            continue
        field = model.model_fields.get(key)
        allowed = f"; {field.description}" if field is not None and field.description else ""
        lines.append(
            f"setting {key}={err.get('input')!r} ({origin.get(key, 'default')}): {err['msg']}{allowed}"
        )
    return "; ".join(lines)


# --------------------------------------------------------------------------------------------- profiles


def profile_names() -> list[str]:
    folder = resources.files("bgad.protocols").joinpath("profiles")
    return sorted(p.name.removesuffix(".toml") for p in folder.iterdir() if p.name.endswith(".toml"))


def _profile_source(name_or_path: str) -> tuple[str, str, str]:
    """(text, origin for messages, profile name) of a profile name or TOML path."""
    path = Path(name_or_path)
    if path.suffix == ".toml" and path.exists():
        return path.read_text(), str(path), path.stem
    res = resources.files("bgad.protocols").joinpath("profiles", f"{name_or_path}.toml")
    if not res.is_file():
        raise ConfigError(f"unknown profile {name_or_path!r}; known profiles: {', '.join(profile_names())}")
    return res.read_text(), f"profile {name_or_path} (protocols/profiles/{name_or_path}.toml)", name_or_path


def load_profile_description(name_or_path: str) -> str:
    """A profile's one-line description (its ``description`` key)."""
    text, origin, _ = _profile_source(name_or_path)
    return str(tomllib.loads(text).get("description", ""))


def load_profile(name_or_path: str) -> dict[str, Any]:
    """Settings of a profile: a name under protocols/profiles/ or a path to a TOML file (validated)."""
    text, origin, _ = _profile_source(name_or_path)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{origin}: not valid TOML ({exc})") from exc
    unknown_top = set(data) - {"settings", "description"}
    if unknown_top:
        raise ConfigError(
            f"{origin}: unknown top-level keys {sorted(unknown_top)} (expected 'description', 'settings')"
        )
    settings = data.get("settings", {})
    check_settings(settings, origin)
    return settings


def check_settings(settings: dict[str, Any], source: str, allow_axes: bool = False) -> None:
    """Names known and values valid for every model that has them (a file or protocol table)."""
    for key in settings:
        _check_name(key, source, allow_axes)
    for model in (CellSettings, RunSettings, *PARAMETER_MODELS):
        chosen = {k: _none_words(k, v) for k, v in settings.items() if k in model.model_fields}
        if chosen:
            try:
                model(**chosen)
            except ValidationError as exc:
                raise ConfigError(_explain(exc, dict.fromkeys(chosen, source), model)) from None


def resolve_config(
    profile: str, overrides: dict[str, Any] | None = None, layers: list[Layer] | None = None
) -> RunConfig:
    """profile < method defaults < ``layers`` (protocol, plan) < ``overrides`` (the command line).

    ``layers`` may set the axes (method, dataset, …); ``overrides`` may not. The method (from any of
    them, default ``bgad``) decides which parameters apply: another method's settings in a profile or
    protocol are skipped for this cell.
    """
    text, origin, name = _profile_source(profile)
    profile_settings = load_profile(profile)
    given = [*(layers or []), ("command line --set", dict(overrides or {}))]
    for source, layer in given[-1:]:
        for key in layer:
            _check_name(key, source, allow_axes=False)
    method = next((layer["method"] for _, layer in reversed(given) if "method" in layer), "bgad")
    try:
        spec = METHODS.get(method)
    except UnknownNameError as exc:
        raise ConfigError(str(exc)) from None
    merged = [
        ("plan", {"profile": name, "method": method}),
        (origin, profile_settings),
        (f"method {method} defaults", spec.defaults),
        *given,
    ]
    applicable = CELL_SETTINGS | RUN_SETTINGS | frozenset(spec.params.model_fields)
    return build_config(
        [
            (src, {k: v for k, v in layer.items() if k in applicable or k not in KNOWN_SETTINGS})
            for src, layer in merged
        ],
        allow_axes=True,
    )


def parse_set_options(items: list[str]) -> dict[str, str]:
    """``["a=1", "b=x"]`` -> ``{"a": "1", "b": "x"}`` with a clear error for a malformed item."""
    out: dict[str, str] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--set expects NAME=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        out[key.strip()] = value
    return out


def describe_settings() -> list[dict[str, Any]]:
    """Every setting: group, name, type, default, constraints, description (for docs and the CLI)."""
    rows = []
    groups = [("cell", CellSettings), ("run", RunSettings)] + [(f"{m.__name__}", m) for m in PARAMETER_MODELS]
    for group, model in groups:
        users = ", ".join(n for n in METHODS.names() if METHODS.get(n).params is model) or "every method"
        for name, field in model.model_fields.items():
            rows.append(
                {
                    "group": group,
                    "methods": users,
                    "name": name,
                    "type": str(field.annotation).replace("typing.", ""),
                    "default": field.default,
                    "limits": limits_in_words(field),
                    "description": field.description or "",
                }
            )
    return rows
