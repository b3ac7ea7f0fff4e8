"""Developer sessions: `nox -s tests` (the full suite, slow real-data tests included) and `nox -s lint`."""

from __future__ import annotations

import nox

nox.options.sessions = ["lint", "tests"]
nox.options.reuse_existing_virtualenvs = True


@nox.session
def tests(session: nox.Session) -> None:
    """Install the package with its test extras and run every test (CPU, offline)."""
    session.install("-e", ".[test]")
    session.run("pytest", *(session.posargs or ["-q"]))


@nox.session
def lint(session: nox.Session) -> None:
    """Static checks: ruff lint and format check."""
    session.install("ruff>=0.5")
    session.run("ruff", "check", "bgad", "baselines", "tests", "benchmarks", "noxfile.py")
    session.run("ruff", "format", "--check", "bgad", "baselines", "tests", "benchmarks", "noxfile.py")


@nox.session
def benchmark(session: nox.Session) -> None:
    """Speed benchmark (benchmarks/speed.py): writes its section of reports/performance.md and .json.

    Pass options after `--`, e.g. `nox -s benchmark -- --smoke` or `nox -s benchmark -- --only 4`.
    Not part of the default sessions: the full run takes a while and needs the AITEX raw copy.
    """
    session.install("-e", ".")
    session.run("python", "benchmarks/speed.py", *session.posargs)
