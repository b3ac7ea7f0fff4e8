"""One frozen run configuration, resolved from profile file < method defaults < command line.

Profiles are TOML files under ``protocols/profiles/`` (installed as ``bgad.protocols``). Every field
below can be overridden with ``--set name=value``; the resolved config is written into each result.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import tomllib
import typing
from dataclasses import dataclass, fields
from importlib import resources
from pathlib import Path
from typing import Any, get_type_hints


class ConfigError(ValueError):
    """A bad option, profile file or override; the message names it."""


# Settings that never change a cell's numbers: where inputs live, how fast it runs, what is kept.
NOT_RESULT_SETTINGS = frozenset(
    {
        "data_root",
        "backbone_weights",
        "threads",
        "device",
        "malloc_tuning",
        "shared_positions",
        "feature_cache",
        "loglik_samples",
        "map_samples",
    }
)


@dataclass(frozen=True)
class RunConfig:
    """Everything that determines one cell's result (plus where its inputs live)."""

    # what
    method: str = "bgad"
    dataset: str = "synthetic"
    category: str = "weave"
    data_root: str | None = None
    seed: int = 0
    profile: str = "quick"
    # backbone and input
    backbone: str = "tf_efficientnet_lite0"
    backbone_weights: str | None = None
    random_weights: bool = False
    input_size: int = 256
    # flows
    n_blocks: int = 8
    clamp: float = 1.9
    cond_dim: int = 128
    # "conditional" (positional condition, the default) or "unconditional" (released --flow_arch flow_model)
    flow_arch: str = "conditional"
    # "none" (released code: raw features) or "standardize" (fixed per-channel input layer, ℓ unchanged
    # in definition; bgad/flows.py ConditionalFlow)
    feature_norm: str = "none"
    # Compute the positional code's share of each coupling subnet once per grid position (same math).
    shared_positions: bool = True
    # schedule (METHOD.md §3)
    meta_epochs: int = 25
    sub_epochs: int = 8
    # Raise sub_epochs so that a meta-epoch trains on at least this many normal images (0: off)
    min_images_per_meta_epoch: int = 0
    phase1_epochs: int = 1
    warmup_epochs: int = 2
    batch_size: int = 32
    lr: float = 2e-4
    lr_min_factor: float = 1e-3
    warmup_start_factor: float = 0.1
    fiber_size: int = 4096
    # known anomalies (METHOD.md §4)
    n_known_anomalies: int = 10
    anomaly_selection: str = "multi_class"
    anomaly_defect_type: str | None = None
    train_types: str | None = None  # comma-separated defect types known anomalies come from (None: all)
    test_types: str | None = None  # comma-separated anomalous types kept in the test set (None: all)
    repeats: int = 5
    racp: bool = True
    racp_per_anomaly: int = 5
    racp_transforms: int = 3
    balanced_sampler: bool = False
    # boundary-guided loss
    beta: float = 0.01
    tau: float = 0.1
    normalizer: float = 10.0
    lam: float = 1.0
    focal: bool = True
    focal_clip: float | None = None
    spp_variant: str = "code"
    # reference baselines (PatchCore, PaDiM)
    coreset_ratio: float = 0.1
    coreset_projection_dim: int = 128
    patchcore_reweight: bool = False
    patchcore_neighbors: int = 9
    padim_channels: int = 100
    padim_ridge: float = 0.01
    smoothing_sigma: float = 4.0
    # evaluation and bookkeeping
    eval_every: int = 1
    loglik_samples: int = 5000
    map_samples: int = 4
    threads: int | None = None  # None: fitted to the free cores while the cell runs (bgad/threads.py)
    device: str = "auto"  # "auto" = cuda when available, else cpu
    # Raise glibc's malloc thresholds for this process (bgad/allocator.py): same numbers, fewer page faults.
    malloc_tuning: bool = True
    feature_cache: bool = True
    feature_dtype: str = "float32"

    def with_overrides(self, overrides: dict[str, Any], source: str = "command line") -> RunConfig:
        known = {f.name for f in fields(self)}
        for key in overrides:
            if key not in known:
                raise ConfigError(
                    f"unknown setting {key!r} ({source}); known settings: {', '.join(sorted(known))}"
                )
        hints = get_type_hints(RunConfig)
        coerced = {k: _coerce(k, v, hints[k], source) for k, v in overrides.items()}
        return dataclasses.replace(self, **coerced)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def result_hash(self) -> str:
        """Hash of the settings that can change the result and differ from their defaults.

        Paths, threads, device and bookkeeping are left out; so are settings at their default value,
        so adding a new setting (with a default that keeps the old behaviour) leaves every existing
        cell id valid. Changing a default's behaviour bumps ``bgad.RESULT_VERSION`` instead.
        """
        defaults = RunConfig().to_dict()
        spec = {k: v for k, v in self.to_dict().items() if k not in NOT_RESULT_SETTINGS and v != defaults[k]}
        return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _coerce(key: str, value: Any, hint: Any, source: str) -> Any:
    """Turn a command-line string (or a TOML value) into the field's declared type, or say why not."""
    args = typing.get_args(hint)
    optional = type(None) in args
    base = next((a for a in args if a is not type(None)), hint)
    text = str(value).strip() if value is not None else ""
    if value is None or (optional and isinstance(value, str) and text.lower() in {"none", "null", ""}):
        if optional:
            return None
        raise ConfigError(f"setting {key} ({source}) cannot be empty")
    try:
        if base is bool:
            if isinstance(value, bool):
                return value
            if text.lower() in _TRUE | _FALSE:
                return text.lower() in _TRUE
        elif base is int and not isinstance(value, bool):
            number = float(text)
            if number.is_integer():
                return int(number)
        elif base is float and not isinstance(value, bool):
            return float(text)
        elif base is str:
            return text
    except ValueError:
        pass
    raise ConfigError(f"setting {key}={value!r} ({source}) is not a valid {getattr(base, '__name__', base)}")


def profile_names() -> list[str]:
    folder = resources.files("bgad.protocols").joinpath("profiles")
    return sorted(p.name.removesuffix(".toml") for p in folder.iterdir() if p.name.endswith(".toml"))


def load_profile(name_or_path: str) -> dict[str, Any]:
    """Settings of a profile: a name under protocols/profiles/ or a path to a TOML file."""
    path = Path(name_or_path)
    if path.suffix == ".toml" and path.exists():
        text, origin = path.read_text(), str(path)
    else:
        res = resources.files("bgad.protocols").joinpath("profiles", f"{name_or_path}.toml")
        if not res.is_file():
            raise ConfigError(
                f"unknown profile {name_or_path!r}; known profiles: {', '.join(profile_names())}"
            )
        text, origin = res.read_text(), f"profile {name_or_path}"
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{origin}: not valid TOML ({exc})") from exc
    settings = data.get("settings", {})
    unknown_top = set(data) - {"settings", "description"}
    if unknown_top:
        raise ConfigError(
            f"{origin}: unknown top-level keys {sorted(unknown_top)} (expected 'description', 'settings')"
        )
    RunConfig().with_overrides(settings, source=origin)  # validates keys and types
    return settings


def resolve_config(profile: str, method_defaults: dict[str, Any], overrides: dict[str, Any]) -> RunConfig:
    """profile file < method defaults < explicit overrides."""
    base = RunConfig(profile=Path(profile).stem if profile.endswith(".toml") else profile)
    cfg = base.with_overrides(load_profile(profile), source=f"profile {profile}")
    cfg = cfg.with_overrides(method_defaults, source=f"method {overrides.get('method', cfg.method)} defaults")
    return cfg.with_overrides(overrides)


def parse_set_options(items: list[str]) -> dict[str, str]:
    """``["a=1", "b=x"]`` -> ``{"a": "1", "b": "x"}`` with a clear error for a malformed item."""
    out: dict[str, str] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--set expects NAME=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        out[key.strip()] = value
    return out
