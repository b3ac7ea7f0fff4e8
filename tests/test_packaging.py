"""What `pip install` installs: pyproject's package list against the package folders on disk.

setuptools installs only the packages listed in ``[tool.setuptools] packages``: a new sub-package
left out of it imports in the checkout (and in an editable install) but is missing from a wheel.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _setuptools() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]


def _folder(package: str, package_dir: dict[str, str]) -> Path:
    """The folder of a dotted package name: under the nearest mapped parent (``package-dir``), else
    the name's own path from the repository root."""
    parts = package.split(".")
    for n in range(len(parts), 0, -1):
        mapped = package_dir.get(".".join(parts[:n]))
        if mapped is not None:
            return REPO / mapped / Path(*parts[n:])
    return REPO / Path(*parts)


def test_every_package_folder_is_listed_and_every_listed_package_exists() -> None:
    config = _setuptools()
    package_dir = config.get("package-dir", {})
    listed = {package: _folder(package, package_dir) for package in config["packages"]}
    roots = {folder for package, folder in listed.items() if "." not in package or package in package_dir}
    with_code = {
        path.parent for root in roots for path in root.rglob("*.py") if "__pycache__" not in path.parts
    }
    missing = sorted(str(p.relative_to(REPO)) for p in with_code - set(listed.values()))
    assert not missing, f"folders with Python files that pyproject.toml does not install: {missing}"
    for package, folder in listed.items():
        assert (folder / "__init__.py").is_file(), f"{package}: no {folder.relative_to(REPO)}/__init__.py"
