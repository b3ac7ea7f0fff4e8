"""No function in the method, its competitors or the suite runs over 50 lines.

Why: a function that does not fit on a screen hides its steps; each step split out gets a name and a
docstring that says why it is there, and can be tested on its own. Counted from ``def`` to the last
line (docstring and blank lines included), decorators excluded.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MAX_LINES = 50

# "path:qualified name" -> why it may be longer. Only for functions whose length is a list and not
# logic (e.g. a constructor with one keyword per setting).
ALLOWED: dict[str, str] = {}


def long_functions(source: str, limit: int = MAX_LINES) -> list[tuple[str, int]]:
    """(qualified name, lines) of every function or method of ``source`` longer than ``limit`` lines."""
    found = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                name = f"{prefix}{child.name}"
                length = child.end_lineno - child.lineno + 1
                if not isinstance(child, ast.ClassDef) and length > limit:
                    found.append((name, length))
                visit(child, name + ".")
            else:
                visit(child, prefix)

    visit(ast.parse(source), "")
    return found


def test_no_function_over_50_lines() -> None:
    too_long = [
        f"{path.relative_to(REPO)}:{name} has {length} lines"
        for root in ("bgad", "baselines")
        for path in sorted((REPO / root).rglob("*.py"))
        for name, length in long_functions(path.read_text(encoding="utf-8"))
        if f"{path.relative_to(REPO)}:{name}" not in ALLOWED
    ]
    assert not too_long, f"split these functions (at most {MAX_LINES} lines):\n" + "\n".join(too_long)


def test_every_allowed_function_exists_and_says_why() -> None:
    """An entry for a function that was split or renamed would hide the next long one under its name."""
    for key, reason in ALLOWED.items():
        path, name = key.split(":")
        names = [n for n, _ in long_functions((REPO / path).read_text(encoding="utf-8"))]
        assert name in names and reason.strip(), key


def test_nested_functions_and_methods_are_counted() -> None:
    def body(indent: int) -> str:
        return "\n".join(" " * indent + f"x{i} = {i}" for i in range(50))

    source = f"class A:\n    def f(self):\n{body(8)}\n\n    def g(self):\n        def h():\n{body(12)}\n"
    assert long_functions(source) == [("A.f", 51), ("A.g", 52), ("A.g.h", 51)]
    assert long_functions(source, limit=60) == []
