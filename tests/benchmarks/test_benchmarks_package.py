"""``benchmarks/`` is one package run as ``python -m benchmarks.<name>``: its modules import each other
plainly (no edits of the import path), its README lists every script, and its report writers leave
other scripts' sections alone."""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.report_io import BASELINES_SECTION, write_section, write_subsection

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = sorted(p.stem for p in (REPO / "benchmarks").glob("*.py") if p.stem != "__init__")
# Runs only in the anomalib virtualenv (imports anomalib at the top, and nothing from bgad).
NEEDS_ANOMALIB = {"anomalib_worker"}


@pytest.mark.parametrize("name", [s for s in SCRIPTS if s not in NEEDS_ANOMALIB])
def test_every_module_imports_as_part_of_the_package(name: str) -> None:
    importlib.import_module(f"benchmarks.{name}")


def test_readme_lists_every_script() -> None:
    readme = (REPO / "benchmarks" / "README.md").read_text(encoding="utf-8")
    missing = [s for s in SCRIPTS if f"`{s}.py`" not in readme]
    assert not missing, f"benchmarks/README.md does not list {missing}"


def test_nothing_edits_the_import_path() -> None:
    """``sys.path`` edits made the scripts one program that only ran from their own folder."""
    edit = re.compile(r"sys\.path\.(insert|append|extend)|sys\.path\s*\+?=")
    offenders = [
        str(p.relative_to(REPO))
        for folder in ("benchmarks", "tests", "bgad", "baselines")
        for p in (REPO / folder).rglob("*.py")
        if p != Path(__file__).resolve() and edit.search(p.read_text(encoding="utf-8"))
    ]
    assert not offenders


def test_a_script_runs_as_a_module_and_writes_only_its_subsection(tmp_path: Path) -> None:
    """``python -m benchmarks.coreset`` from the repository root, on a tiny bank, into a report that
    holds another script's marked section and another subsection of the baselines section."""
    report = tmp_path / "performance.md"
    write_section(report, "speed", "## Speed\n\nfast")
    write_subsection(report, "### BrainMRI: ours vs anomalib", "### BrainMRI: ours vs anomalib\n\npeer")
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.coreset", "--n", "300", "--ratio", "0.05", "--naive-steps", "3"]
        + ["--repeats", "1", "--threads", "1", "--report", str(report)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = report.read_text()
    assert "<!-- speed:start -->\n## Speed\n\nfast\n<!-- speed:end -->" in text
    baselines = text[text.index(BASELINES_SECTION) :]
    assert "### BrainMRI: ours vs anomalib\n\npeer" in baselines
    assert "### Greedy coreset selection" in baselines and "python -m benchmarks.coreset" in baselines


def test_a_subsection_is_replaced_in_place(tmp_path: Path) -> None:
    report = tmp_path / "performance.md"
    write_subsection(report, "### A", "### A\n\none")
    write_subsection(report, "### B", "### B\n\ntwo")
    write_section(report, "load", "## Load")
    write_subsection(report, "### A", "### A\n\nthree")
    text = report.read_text()
    assert text.count("### A") == 1 and "three" in text and "one" not in text
    assert text.index("### A") < text.index("### B") < text.index("<!-- load:start -->")
