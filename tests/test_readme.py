"""The README's examples run as written: every ```python block, and the `bgad-bench` lines that need no data.

A newcomer copies these first; an example that fails (a file that does not exist, a dataset not
prepared, a name left undefined) is the first impression of the whole suite.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bgad.bench.cli import app

README = Path(__file__).resolve().parents[1] / "README.md"


def _blocks(language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", README.read_text(encoding="utf-8"), re.S | re.M)


def _offline_commands() -> list[list[str]]:
    """The `bgad-bench` lines of the README that read no dataset: `ls`, `config` and any `--dry-run`."""
    commands = []
    for block in _blocks("bash"):
        for line in block.splitlines():
            words = shlex.split(line, comments=True)
            if words[:1] == ["bgad-bench"] and (words[1] in ("ls", "config") or "--dry-run" in words):
                commands.append(words[1:])
    return commands


@pytest.mark.slow
@pytest.mark.parametrize("number", range(len(_blocks("python"))))
def test_python_example_runs_as_written(number: int, tmp_path: Path) -> None:
    """In a fresh process, in an empty folder, with nothing prepared but what the code makes itself."""
    env = {**os.environ, "BGAD_WORK_DIR": str(tmp_path / "work")}
    done = subprocess.run(
        [sys.executable, "-c", _blocks("python")[number]],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_readme_has_offline_examples() -> None:
    commands = _offline_commands()
    assert ["ls"] in commands and any("--dry-run" in c for c in commands), commands


@pytest.mark.parametrize("args", _offline_commands(), ids=" ".join)
def test_offline_command_runs_as_written(
    args: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BGAD_WORK_DIR", str(tmp_path / "work"))
    monkeypatch.setenv("BGAD_DATA_DIR", str(tmp_path / "no-data"))  # "needs no data": none is there
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
