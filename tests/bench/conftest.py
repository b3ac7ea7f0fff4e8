"""Slurm fixtures: the `slurm` tests use the single-node cluster that tests/slurm/cluster.sh starts.

A developer's plain `pytest` skips them (with the reason) when no cluster is reachable. They are
mandatory when BGAD_REQUIRE_SLURM is 1/true/yes (.ci/run sets it), or when it is unset and CI=true:
then a missing cluster fails the tests instead.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

START_HINT = (
    "start one with `tests/slurm/cluster.sh start /tmp/bgad-slurm` (as root; stop it with `... stop`)"
)


def slurm_required() -> bool:
    flag = os.environ.get("BGAD_REQUIRE_SLURM")
    if flag is not None and flag.strip():
        return flag.strip().lower() in {"1", "true", "yes"}
    return os.environ.get("CI", "").strip().lower() == "true"


def slurm_unavailable_reason() -> str | None:
    """Why no Slurm cluster can run our jobs, or None when a node is idle (or busy with other jobs)."""
    if shutil.which("sinfo") is None:
        return "no Slurm cluster: `sinfo` is not on PATH"
    try:
        proc = subprocess.run(
            ["sinfo", "-h", "-N", "-o", "%N %T"], capture_output=True, text=True, timeout=20, check=False
        )
    except subprocess.TimeoutExpired:
        return "no Slurm cluster: `sinfo` did not answer within 20 s"
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["(no message)"])[-1]
        return f"no Slurm cluster: `sinfo` failed: {last}"
    states = [line.split()[-1] for line in proc.stdout.splitlines() if line.strip()]
    if not any(s.rstrip("*~#!%$@^-").startswith(("idle", "mixed", "allocated")) for s in states):
        return f"no usable Slurm node (sinfo node states: {', '.join(states) or 'none'})"
    return None


@pytest.fixture(scope="session")
def slurm_cluster() -> None:
    """Skip (or, when required, fail) unless a Slurm cluster with a usable node answers."""
    required = slurm_required()
    reason = slurm_unavailable_reason()
    if reason is None:
        try:
            import submitit  # noqa: F401
        except ImportError:
            reason = "submitit is not installed"
    if reason is None:
        return
    if required:
        pytest.fail(
            f"a Slurm cluster is required (BGAD_REQUIRE_SLURM/CI) but {reason}; {START_HINT}", pytrace=False
        )
    pytest.skip(f"{reason}; {START_HINT}")
