"""Developer sessions: `nox -s tests` (the full suite, slow real-data tests included) and `nox -s lint`."""

from __future__ import annotations

import nox

nox.options.sessions = ["lint", "tests"]
nox.options.reuse_existing_virtualenvs = True

INSTALL_ATTEMPTS = 3


def install(session: nox.Session, *args: str) -> None:
    """`session.install` that survives a flaky network.

    A clean install pulls torch and its CUDA wheels (gigabytes) from PyPI; CI once failed on a single
    interrupted download. pip retries each request and resumes a cut download, and the whole install
    is retried: wheels that did arrive are in pip's cache, so a retry only fetches what is missing.
    """
    env = {"PIP_RETRIES": "10", "PIP_TIMEOUT": "60", "PIP_RESUME_RETRIES": "20"}
    for attempt in range(1, INSTALL_ATTEMPTS + 1):
        try:
            session.install(*args, env=env)
            return
        except nox.command.CommandFailed:
            if attempt == INSTALL_ATTEMPTS:
                raise
            session.warn(f"pip install failed (attempt {attempt} of {INSTALL_ATTEMPTS}); trying again")


@nox.session
def tests(session: nox.Session) -> None:
    """Install the package with its test and MLflow extras and run every test (CPU, offline)."""
    install(session, "-e", ".[test,mlflow]")
    session.run("pytest", *(session.posargs or ["-q"]))


@nox.session
def lint(session: nox.Session) -> None:
    """Static checks: ruff lint and format check."""
    install(session, "ruff>=0.5")
    session.run("ruff", "check", "bgad", "baselines", "tests", "benchmarks", "noxfile.py")
    session.run("ruff", "format", "--check", "bgad", "baselines", "tests", "benchmarks", "noxfile.py")


@nox.session
def benchmark(session: nox.Session) -> None:
    """Speed benchmark (`python -m benchmarks.speed`): writes its section of reports/performance.md and .json.

    Pass options after `--`, e.g. `nox -s benchmark -- --smoke` or `nox -s benchmark -- --only 4`.
    Not part of the default sessions: the full run takes a while and needs the AITEX raw copy. Runs in
    the repository root (nox's working folder), where the `benchmarks` package is importable.
    """
    install(session, "-e", ".")
    session.run("python", "-m", "benchmarks.speed", *session.posargs)
