"""Executors: one contract (outcomes in key order, retries, failures as outcomes) for every executor."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from bgad.bench.executors import (
    EXECUTORS,
    Executor,
    JoblibExecutor,
    LocalExecutor,
    Outcome,
    SlurmExecutor,
    make_executor,
)
from bgad.registry import UnknownNameError

# ----------------------------------------------------------- module-level functions (they must pickle)


def square(x: int) -> int:
    return x * x


def flaky(arg: tuple[str, str, int]) -> int:
    """mode "ok": returns; "once": fails on the first attempt only (marker file); "always": always fails."""
    mode, marker, value = arg
    if mode == "always":
        raise ValueError(f"item {value} always fails")
    if mode == "once" and not Path(marker).exists():
        Path(marker).touch()
        raise RuntimeError(f"item {value} fails on its first attempt")
    return value


def interrupt_at_three(x: int) -> int:
    if x == 3:
        raise KeyboardInterrupt
    return x


def torch_environment(n: int) -> dict[str, object]:
    import torch

    return {
        "sum": float(torch.ones(n).sum()),
        "python": sys.executable,
        "torch": torch.__file__,
        "job_ids": {os.environ.get("SLURM_JOB_ID"), os.environ.get("SLURM_ARRAY_JOB_ID")},
    }


def _flaky_items(tmp_path: Path) -> tuple[list[tuple[str, str, int]], list[str]]:
    items = [("ok", "", 1), ("once", str(tmp_path / "once.marker"), 2), ("always", "", 3)]
    return items, ["ok", "once", "always"]


def _local_executors(max_retries: int = 1) -> list[Executor]:
    return [LocalExecutor(max_retries=max_retries), JoblibExecutor(n_jobs=2, max_retries=max_retries)]


# -------------------------------------------------------------------------------------- local + joblib


@pytest.mark.parametrize("executor", _local_executors(), ids=lambda e: e.name)
def test_runs_items_and_returns_outcomes_in_key_order(executor: Executor) -> None:
    keys = ["c", "a", "d", "b"]
    seen: list[Outcome] = []
    outcomes = executor.run(square, [3, 1, 4, 2], keys, on_done=seen.append)
    assert isinstance(executor, Executor)
    assert [o.key for o in outcomes] == keys
    assert [o.value for o in outcomes] == [9, 1, 16, 4]
    assert all(o.ok and o.error is None and o.attempts == 1 and o.job_id is None for o in outcomes)
    assert sorted(o.key for o in seen) == sorted(keys)  # on_done once per item, in finishing order


@pytest.mark.parametrize("executor", _local_executors(max_retries=1), ids=lambda e: e.name)
def test_failures_are_retried_then_reported(executor: Executor, tmp_path: Path) -> None:
    items, keys = _flaky_items(tmp_path)
    seen: list[str] = []
    ok, once, always = executor.run(flaky, items, keys, on_done=lambda o: seen.append(o.key))
    assert (ok.ok, ok.value, ok.attempts) == (True, 1, 1)
    assert (once.ok, once.value, once.attempts) == (True, 2, 2)
    assert (always.ok, always.value, always.attempts) == (False, None, 2)
    assert "ValueError: item 3 always fails" in always.error and "Traceback" in always.error
    assert sorted(seen) == sorted(keys)


@pytest.mark.parametrize("executor", _local_executors(max_retries=0), ids=lambda e: e.name)
def test_no_retries(executor: Executor, tmp_path: Path) -> None:
    items, keys = _flaky_items(tmp_path)
    outcomes = executor.run(flaky, items, keys)
    assert [(o.ok, o.attempts) for o in outcomes] == [(True, 1), (False, 1), (False, 1)]
    assert "fails on its first attempt" in outcomes[1].error


def test_joblib_gives_the_same_values_as_local() -> None:
    items, keys = list(range(12)), [f"k{i}" for i in range(12)]
    local = LocalExecutor().run(square, items, keys)
    parallel = JoblibExecutor(n_jobs=2).run(square, items, keys)
    assert [(o.key, o.ok, o.value) for o in parallel] == [(o.key, o.ok, o.value) for o in local]


def test_local_keyboard_interrupt_propagates_after_reporting() -> None:
    finished: list[str] = []
    with pytest.raises(KeyboardInterrupt) as info:
        LocalExecutor(max_retries=3).run(
            interrupt_at_three, [1, 2, 3, 4], list("abcd"), on_done=lambda o: finished.append(o.key)
        )
    assert finished == ["a", "b"]  # not retried, nothing after it ran
    assert any("2 of 4 items finished (a, b); not finished: c, d" in note for note in info.value.__notes__)


@pytest.mark.parametrize("executor", [*_local_executors()], ids=lambda e: e.name)
def test_empty_and_bad_inputs(executor: Executor) -> None:
    assert executor.run(square, [], []) == []
    with pytest.raises(ValueError, match="2 items but 1 keys"):
        executor.run(square, [1, 2], ["a"])
    with pytest.raises(ValueError, match="duplicate key 'a'"):
        executor.run(square, [1, 2], ["a", "a"])


def test_registry_and_make_executor(tmp_path: Path) -> None:
    assert EXECUTORS.names() == ["joblib", "local", "slurm"]
    assert isinstance(make_executor("local"), LocalExecutor)
    joblib_ex = make_executor("joblib", n_jobs=2, max_retries=0)
    assert (joblib_ex.n_jobs, joblib_ex.max_retries) == (2, 0)
    slurm_ex = make_executor("slurm", folder=tmp_path, partition="debug", mem_gb=1.5)
    assert isinstance(slurm_ex, SlurmExecutor) and slurm_ex.name == "slurm"
    with pytest.raises(
        ValueError, match=r"unknown option\(s\) 'n_job' for executor 'joblib'; valid options: n_jobs"
    ):
        make_executor("joblib", n_job=2)
    with pytest.raises(ValueError, match="executor 'joblib' needs option"):
        make_executor("joblib")
    with pytest.raises(UnknownNameError, match="Did you mean 'slurm'"):
        make_executor("slurmm")
    with pytest.raises(ValueError, match="max_retries"):
        make_executor("local", max_retries=-1)


# ------------------------------------------------------------------------------------------------ slurm


@pytest.fixture
def pickle_this_module_by_value(slurm_cluster: None):
    """Test modules are imported from tests/ (not installed): ship these functions to the job by value."""
    import cloudpickle

    module = sys.modules[__name__]
    cloudpickle.register_pickle_by_value(module)
    yield
    cloudpickle.unregister_pickle_by_value(module)


@pytest.mark.slurm
def test_slurm_array_retries_and_reports_job_ids(pickle_this_module_by_value: None, tmp_path: Path) -> None:
    executor = make_executor("slurm", folder=tmp_path / "submitit", time_min=5, max_retries=1, poll_s=0.25)
    items, keys = _flaky_items(tmp_path)
    seen: list[str] = []
    ok, once, always = executor.run(flaky, items, keys, on_done=lambda o: seen.append(o.key))
    assert sorted(seen) == sorted(keys)
    assert (ok.ok, ok.value, ok.attempts) == (True, 1, 1)
    assert (once.ok, once.value, once.attempts) == (True, 2, 2)
    assert (always.ok, always.value, always.attempts) == (False, None, 2)
    assert "item 3 always fails" in always.error
    # The first tries ran as one 3-task array; the retries as new jobs (one array per poll that saw failures).
    first_array = ok.job_id.split("_")[0]
    assert ok.job_id == f"{first_array}_0"
    assert once.job_id.split("_")[0] != first_array and always.job_id.split("_")[0] != first_array
    assert executor.last_run_folder is not None and executor.last_run_folder.parent == tmp_path / "submitit"


@pytest.mark.slurm
def test_slurm_job_sees_the_same_python_environment(
    pickle_this_module_by_value: None, tmp_path: Path
) -> None:
    import torch

    executor = SlurmExecutor(tmp_path / "submitit", time_min=5, max_retries=0, poll_s=0.25)
    (outcome,) = executor.run(torch_environment, [3], ["torch"])
    assert outcome.ok, outcome.error
    assert outcome.value["sum"] == 3.0
    assert outcome.value["python"] == sys.executable
    assert outcome.value["torch"] == torch.__file__
    assert outcome.job_id.split("_")[0] in outcome.value["job_ids"]  # a single item: a plain job, no array
    first_folder = executor.last_run_folder
    assert executor.run(square, [5], ["five"])[0].value == 25
    assert executor.last_run_folder != first_folder  # a fresh submitit folder per run


def bad_setting(x: int) -> int:
    from bgad.bench.config import ConfigError

    raise ConfigError(f"setting lr={x} is out of range")


@pytest.mark.parametrize("executor", _local_executors(max_retries=3), ids=lambda e: e.name)
def test_deterministic_errors_are_not_retried(executor: Executor) -> None:
    (outcome,) = executor.run(bad_setting, [5], ["bad"])
    assert not outcome.ok and outcome.attempts == 1 and "ConfigError" in outcome.error


def test_retryable_decides_by_class_also_for_subclasses_never_listed() -> None:
    """A subclass of ``UserError`` declared anywhere is not retried; any other failure is."""
    from bgad.bench.executors import _call, retryable
    from bgad.errors import UserError

    class LateUserError(UserError):
        pass

    def fails(exc: Exception) -> None:
        raise exc

    _, ok, _, error = _call(fails, 0, LateUserError("bad option --foo"))
    assert not ok and not retryable(error)
    _, _, _, error = _call(fails, 0, MemoryError())
    assert retryable(error)
    assert retryable("joblib worker failure: ... TerminatedWorkerError: killed")


def test_slurm_without_a_cluster_says_so_in_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from bgad.bench.executors import SubmissionError

    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch anywhere
    with pytest.raises(SubmissionError, match="sinfo"):
        SlurmExecutor(tmp_path / "slurm").run(square, [1], ["one"])
