"""A cell's resolved configuration: profile < method defaults < protocol < command line, validated.

``RunConfig`` is three typed parts (``bgad.bench.params``): the cell (method, data, input, known
anomalies, seed), the method's own parameters, and run-level settings (threads, device, paths) that
never change a number. Settings are read as ``cfg.lr``; a setting of another method is an
AttributeError, not a silent default. Every value is validated where it enters, and an error names
the setting, what is allowed and where the value came from (profile file, protocol, ``--set``).
The suite's data files (profiles, protocols, Table 7's subsets, the regression tolerances) are read
through pydantic models that forbid unknown keys (``parse_data_file``): a misspelt key is an error
that names the file, the table and the key, never a setting silently left at its default.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from types import UnionType
from typing import Any, TypeVar, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic_core import ErrorDetails

from bgad.bench.method_registry import METHODS, MethodSpec
from bgad.bench.params import CellSettings, RunSettings, Settings, limits_in_words
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
#: Every method-parameter model, each once, read from the method registry (a setting named in any of
#: them is a known setting): a method registered with a new model adds its settings here by itself.
PARAMETER_MODELS: tuple[type[Settings], ...] = tuple(
    dict.fromkeys(METHODS.get(n).params for n in METHODS.names())
)
PARAMETERS = frozenset(name for model in PARAMETER_MODELS for name in model.model_fields)
KNOWN_SETTINGS = RUN_SETTINGS | CELL_SETTINGS | PARAMETERS

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


# ------------------------------------------------------------------------------------------- data files

M = TypeVar("M", bound=BaseModel)


class DataFile(BaseModel):
    """A table of a data file (profile, protocol, defect subsets, tolerances): its keys are its fields,
    and any other key is an error, so a misspelt key never passes as an ignored one."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def parse_data_file(model: type[M], text: str, origin: str) -> M:
    """The TOML ``text`` of the file ``origin`` as ``model``, or a ``ConfigError``: one line per problem,
    naming the file, the table and the key (with the keys allowed there when the key is unknown)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{origin}: not valid TOML ({exc})") from None
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError("; ".join(_file_problem(err, origin, model) for err in exc.errors())) from None


def _file_problem(err: ErrorDetails, origin: str, model: type[BaseModel]) -> str:
    """One pydantic error in the file's words: ``FILE [table]: what is wrong with which key``."""
    names_key = err["loc"][-1] == "[key]"  # the key itself is wrong (a table with fixed key names)
    *table, key = err["loc"][:-1] if names_key else err["loc"]
    where = f"{origin} [{_table_name(table)}]" if table else origin
    if names_key:
        return f"{where}: unknown key {key!r}; allowed: {err['msg'].removeprefix('Input should be ')}"
    if err["type"] == "extra_forbidden":
        allowed = ", ".join(sorted(_table_model(model, table).model_fields))
        return f"{where}: unknown key {key!r}; allowed: {allowed}"
    key = f"item #{key + 1}" if isinstance(key, int) else key
    if err["type"] == "missing":
        return f"{where}: missing key {key!r}"
    message = str(err["ctx"]["error"]) if err["type"] == "value_error" else err["msg"]
    # TOML writes arrays; the models keep them as tuples (immutable).
    message = message.replace("valid tuple", "list").replace("Tuple", "List")
    return f"{where}: {key} = {err['input']!r}: {message}"


def _table_name(table: list[str | int]) -> str:
    """An error's path as the file's reader finds it: ``variants #1``, ``categories.carpet``."""
    return "".join(f" #{p + 1}" if isinstance(p, int) else f".{p}" for p in table).removeprefix(".")


def _table_model(model: type[BaseModel], table: list[str | int]) -> type[BaseModel]:
    """The model of the table at ``table`` (an error's path) inside ``model``'s file."""
    annotation: Any = model
    for part in table:
        if isinstance(part, str) and isinstance(annotation, type) and issubclass(annotation, BaseModel):
            annotation = annotation.model_fields[part].annotation
        else:  # an item of an array of tables, or a named sub-table of a dict
            annotation = get_args(annotation)[-1 if get_origin(annotation) is dict else 0]
        if get_origin(annotation) in (Union, UnionType):  # an optional table
            annotation = next(a for a in get_args(annotation) if a is not type(None))
    return annotation


# --------------------------------------------------------------------------------------------- profiles


def profile_names() -> list[str]:
    folder = resources.files("bgad.protocols").joinpath("profiles")
    return sorted(p.name.removesuffix(".toml") for p in folder.iterdir() if p.name.endswith(".toml"))


class ProfileFile(DataFile):
    """A profile file: a one-line description, its settings (checked by ``check_settings``) and, per
    method, settings that method takes instead (``[methods.devnet]``): one profile can give DevNet its
    own batch and learning rate while the flows keep theirs, under the same setting names. A name the
    method's table leaves out falls back to ``settings``."""

    description: str = ""
    settings: dict[str, Any] = {}
    methods: dict[str, dict[str, Any]] = {}


def _read_profile(name_or_path: str) -> tuple[ProfileFile, str, str]:
    """(the validated profile, origin for messages, profile name) of a profile name or TOML path."""
    path = Path(name_or_path)
    if path.suffix == ".toml" and path.exists():
        text, origin, name = path.read_text(), str(path), path.stem
    else:
        res = resources.files("bgad.protocols").joinpath("profiles", f"{name_or_path}.toml")
        if not res.is_file():
            raise ConfigError(
                f"unknown profile {name_or_path!r}; known profiles: {', '.join(profile_names())}"
            )
        text, origin, name = (
            res.read_text(),
            f"profile {name_or_path} (protocols/profiles/{name_or_path}.toml)",
            name_or_path,
        )
    profile = parse_data_file(ProfileFile, text, origin)
    check_settings(profile.settings, origin)
    for method, settings in profile.methods.items():
        if method not in METHODS.names():
            raise ConfigError(
                f"{origin} [methods.{method}]: unknown method; registered: {', '.join(METHODS.names())}"
            )
        where = f"{origin} [methods.{method}]"
        for key in settings:
            if key not in (CELL_SETTINGS | RUN_SETTINGS | frozenset(METHODS.get(method).params.model_fields)):
                raise ConfigError(f"{where}: {key!r} is not a setting of method {method!r}")
        check_settings(settings, where)
    return profile, origin, name


def load_profile_description(name_or_path: str) -> str:
    """A profile's one-line description (its ``description`` key)."""
    return _read_profile(name_or_path)[0].description


def load_profile(name_or_path: str) -> dict[str, Any]:
    """Settings of a profile: a name under protocols/profiles/ or a path to a TOML file (validated)."""
    return dict(_read_profile(name_or_path)[0].settings)


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
    """profile < method defaults < the profile's table of the method < ``layers`` (protocol, plan) <
    ``overrides`` (the command line).

    ``layers`` may set the axes (method, dataset, …); ``overrides`` may not. The method (from any of
    them, default ``bgad``) decides which parameters apply: another method's settings in a profile or
    protocol are skipped for this cell.
    """
    profile_file, origin, name = _read_profile(profile)
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
        (origin, profile_file.settings),
        (f"method {method} defaults", spec.defaults),
        (f"{origin} [methods.{method}]", profile_file.methods.get(method, {})),
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


def _declared_by(model: type[Settings], name: str) -> type:
    """The class that declares setting ``name`` of ``model`` (a shared base such as ``SupervisedParams``)."""
    return next(c for c in model.__mro__ if name in vars(c).get("__annotations__", {}))


def describe_settings() -> list[dict[str, Any]]:
    """Every setting: group, name, type, default, constraints, description (for docs and the CLI).

    A setting that several parameter models inherit from one base (DevNet's and DRA's shared training,
    ``SupervisedParams``) is one row naming all their methods, grouped under that base; settings of the
    same name declared apart (the flows' ``lr`` and DevNet's) keep a row each, as their values may differ.
    """
    rows: dict[tuple, dict[str, Any]] = {}
    groups = [("cell", CellSettings), ("run", RunSettings)] + [(f"{m.__name__}", m) for m in PARAMETER_MODELS]
    for group, model in groups:
        users = [n for n in METHODS.names() if METHODS.get(n).params is model] or ["every method"]
        for name, field in model.model_fields.items():
            owner = _declared_by(model, name)
            key = (owner, name, repr(field.default))
            if key in rows:
                rows[key]["methods"] += ", " + ", ".join(users)
                rows[key]["group"] = owner.__name__
                continue
            rows[key] = {
                "group": group,
                "methods": ", ".join(users),
                "name": name,
                "type": str(field.annotation).replace("typing.", ""),
                "default": field.default,
                "limits": limits_in_words(field),
                "description": field.description or "",
            }
    return list(rows.values())
