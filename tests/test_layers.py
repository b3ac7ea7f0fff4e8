"""The import graph runs one way: base < data < method < baselines < suite.

Why: a reader of the paper must find BGAD (flows, losses, boundary, anomaly synthesis, scoring) in
modules that stand on their own, and a competitor must be a method like BGAD, not a part of the
benchmark suite. One import from a higher layer (``from bgad.bench.config import RunConfig`` in the
flow detector) ties the method to the suite's settings, files and registry again, so every import is
checked here: module-level, function-local (also under ``TYPE_CHECKING``) and the literal module names
given to ``importlib.import_module`` or ``__import__``.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LAYERS = ("base", "data", "method", "baselines", "suite")

# The modules of bgad/ itself by name, the sub-packages by prefix. `bgad` is the package's face: the
# lazy Python API, which loads the suite.
_BASE = ["errors", "registry", "fileio", "paths", "threads"]
_METHOD = ["backbones", "features", "flows", "losses", "loss_settings", "anomalies", "scoring", "metrics"]
_METHOD += ["selection"]
_MODULES = {
    "bgad": "suite",
    **{f"bgad.{name}": "base" for name in _BASE},
    **{f"bgad.{name}": "method" for name in [*_METHOD, "flow_detector"]},
}
_PACKAGES = {"bgad.data": "data", "bgad.baselines": "baselines", "bgad.bench": "suite"}


def layer_of(module: str) -> str | None:
    """The layer of a ``bgad`` module (None: a module no layer names, or not ours)."""
    if module in _MODULES:
        return _MODULES[module]
    for package, layer in _PACKAGES.items():
        if module == package or module.startswith(package + "."):
            return layer
    return None


def module_name(path: Path) -> str:
    """The import name of a source file (``baselines/`` is installed as ``bgad.baselines``)."""
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[0] == "baselines":
        parts.insert(0, "bgad")
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def source_files() -> list[Path]:
    return sorted([*(REPO / "bgad").rglob("*.py"), *(REPO / "baselines").rglob("*.py")])


KNOWN = {module_name(p) for p in source_files()}


def _from_target(node: ast.ImportFrom, module: str, is_package: bool) -> list[str]:
    """What ``from X import a, b`` loads: ``X.a`` where that is one of our modules, else ``X``."""
    base = node.module or ""
    if node.level:
        parts = module.split(".")
        anchor = parts[: len(parts) - node.level + is_package]
        base = ".".join(anchor + ([node.module] if node.module else []))
    return [f"{base}.{a.name}" if f"{base}.{a.name}" in KNOWN else base for a in node.names]


def _dynamic_target(node: ast.Call) -> str | None:
    """The literal module name of ``importlib.import_module("...")`` or ``__import__("...")``."""
    func = node.func
    name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
    if name in ("import_module", "__import__") and node.args and isinstance(node.args[0], ast.Constant):
        return node.args[0].value if isinstance(node.args[0].value, str) else None
    return None


def imports(source: str, module: str, is_package: bool = False) -> Iterator[tuple[int, str]]:
    """(line, imported module) for every import anywhere in ``source``, the text of ``module``."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            yield from ((node.lineno, a.name) for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            yield from ((node.lineno, t) for t in _from_target(node, module, is_package))
        elif isinstance(node, ast.Call) and (target := _dynamic_target(node)):
            yield node.lineno, target


def violations(source: str, module: str, is_package: bool = False) -> list[str]:
    """Every import of ``source`` that reaches a higher layer than ``module``'s own (none for a module
    without a layer: ``test_every_module_has_a_layer`` names those)."""
    if layer_of(module) is None:
        return []
    own = LAYERS.index(layer_of(module))
    found = []
    for line, target in imports(source, module, is_package):
        layer = layer_of(target)
        if layer is not None and LAYERS.index(layer) > own:
            found.append(f"{module} ({LAYERS[own]}) line {line} imports {target} ({layer})")
    return found


def test_every_module_has_a_layer() -> None:
    """A new module must be placed in a layer here, or the rule would silently not cover it."""
    unplaced = sorted(m for m in KNOWN if layer_of(m) is None)
    assert not unplaced, f"add these modules to a layer in tests/test_layers.py: {unplaced}"


def test_no_import_goes_up_a_layer() -> None:
    found = [
        v
        for path in source_files()
        for v in violations(path.read_text(encoding="utf-8"), module_name(path), path.name == "__init__.py")
    ]
    rule = "imports against the layer rule (base < data < method < baselines < suite):\n"
    assert not found, rule + "\n".join(found)


@pytest.mark.parametrize(
    "source",
    [
        "from bgad.bench.config import RunConfig",
        "import bgad.bench.config",
        "from bgad import bench",
        "from bgad import run_cell",  # the package's face is the suite's API
        "def f():\n    from bgad.bench import store\n",
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from bgad.baselines.padim import PaDiM\n",
        "import importlib\nM = importlib.import_module('bgad.bench.api')\n",
        "def g():\n    return __import__('bgad.baselines.patchcore')\n",
    ],
)
def test_the_checker_sees_every_kind_of_import(source: str) -> None:
    """An import the checker missed would let the rule pass on code that breaks it."""
    assert violations(source, "bgad.flows")


@pytest.mark.parametrize(
    ("source", "module", "is_package"),
    [
        ("from bgad import threads, errors\nimport numpy", "bgad.flows", False),
        ("from bgad.data.datasets import load_category", "bgad.selection", False),
        ("from ._common import smooth_maps", "bgad.baselines.padim", False),
        ("from . import datasets", "bgad.data", True),
        ("from bgad.flow_detector import FlowDetector", "bgad.baselines.padim", False),
        ("from bgad.baselines.padim import PaDiM", "bgad.bench.cell", False),
    ],
)
def test_imports_down_the_layers_pass(source: str, module: str, is_package: bool) -> None:
    assert violations(source, module, is_package) == []


def test_relative_imports_resolve_to_the_module_they_load() -> None:
    assert [t for _, t in imports("from ..bench import store", "bgad.data.datasets")] == ["bgad.bench.store"]
    assert [t for _, t in imports("from . import datasets", "bgad.data", True)] == ["bgad.data.datasets"]
    assert [t for _, t in imports("from .padim import PaDiM", "bgad.baselines.dra")] == [
        "bgad.baselines.padim"
    ]
