"""Interchangeable executors: run one picklable module-level function over a list of items.

Every executor has the same contract (:class:`Executor`): ``run(fn, items, keys, on_done)`` calls
``fn(item)`` once per item, retries an item whose call failed up to ``max_retries`` more times, calls
``on_done`` once per item as soon as that item is settled (success, or failure after the last try), and
returns one :class:`Outcome` per item **in the order of ``keys``** (the order they were given). A failure
never aborts the other items; it is an outcome with ``ok=False`` and the error text (a traceback).

One loop (:meth:`Executor.run`) owns rounds, retries and interrupts; a backend only says how one
round of attempts runs (``_attempt``) and how to cancel it. Why our own thin interface and not
submitit's executors alone: joblib's loky workers run locally without any cluster software, and the
three backends then share one retry rule. Only failures that can pass are retried (a crash, a killed
job, memory); a bad setting, missing data or weights (a ``bgad.errors.DeterministicError``) fail the same way
every time, so they are reported at once.

- ``local``  :class:`LocalExecutor`, sequential and in-process (the debug executor).
- ``joblib`` :class:`JoblibExecutor`, local worker processes (joblib's loky backend).
- ``slurm``  :class:`SlurmExecutor`, one Slurm job-array task per item through submitit.

``fn`` and the items must be picklable (module-level functions are pickled by reference, so the
module must be importable by the worker: by a loky worker always, by a Slurm job when it is installed
or on the job's ``PYTHONPATH``). joblib and submitit are imported only when an executor runs.
"""

from __future__ import annotations

import inspect
import logging
import shutil
import time
import traceback
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bgad.errors import NOT_RETRIED, UserError
from bgad.registry import Registry

__all__ = [
    "EXECUTORS",
    "Executor",
    "JoblibExecutor",
    "LocalExecutor",
    "Outcome",
    "SlurmExecutor",
    "SubmissionError",
    "make_executor",
]

log = logging.getLogger(__name__)


@dataclass
class Outcome:
    """What happened to one item: its value, or the error of its last attempt."""

    key: str
    ok: bool
    value: Any | None
    error: str | None
    attempts: int
    job_id: str | None = None


class SubmissionError(UserError, RuntimeError):
    """The cluster refused the first submission of a run (bad partition, resources, no Slurm …)."""


# --------------------------------------------------------------------------------------------- helpers


def _check_inputs(items: Sequence[Any], keys: Sequence[str]) -> tuple[list[Any], list[str]]:
    items, keys = list(items), list(keys)
    if len(items) != len(keys):
        raise ValueError(f"got {len(items)} items but {len(keys)} keys")
    seen: set[str] = set()
    for key in keys:
        if not isinstance(key, str):
            raise TypeError(f"keys must be strings, got {key!r}")
        if key in seen:
            raise ValueError(f"duplicate key {key!r}")
        seen.add(key)
    return items, keys


def _check_retries(max_retries: int) -> int:
    if not isinstance(max_retries, int) or max_retries < 0:
        raise ValueError(f"max_retries must be an integer >= 0, got {max_retries!r}")
    return max_retries


def _format_exception(exc: BaseException) -> str:
    return "".join(traceback.format_exception(exc)).rstrip()


def _report_interrupt(exc: KeyboardInterrupt, name: str, keys: list[str], done: dict[str, Outcome]) -> None:
    finished = [k for k in keys if k in done]
    unfinished = [k for k in keys if k not in done]
    message = (
        f"{name} executor interrupted: {len(finished)} of {len(keys)} items finished "
        f"({', '.join(finished) or 'none'}); not finished: {', '.join(unfinished) or 'none'}"
    )
    log.warning(message)
    exc.add_note(message)


def _call(fn: Callable[[Any], Any], index: int, item: Any) -> tuple[int, bool, Any, str | None]:
    """One attempt, run where the executor runs it; exceptions become data (so one bad item aborts nothing)."""
    try:
        return index, True, fn(item), None
    except Exception as exc:  # every failure of the user's function is an outcome
        return index, False, None, _format_exception(exc)


def error_summary(error: str | None) -> str:
    """The exception's own line of a failure's traceback text (its ``NOT_RETRIED`` note said after it)."""
    lines = [line for line in (error or "").strip().splitlines() if line.strip() != NOT_RETRIED]
    last = lines[-1] if lines else ""
    return f"{last} {NOT_RETRIED}" if NOT_RETRIED in (error or "") else last


def retryable(error: str | None) -> bool:
    """Whether a failure (its traceback text) can pass on another attempt: not a ``DeterministicError``."""
    return NOT_RETRIED not in (error or "")


Attempt = tuple[int, bool, Any, str | None, str | None]  # index, ok, value, error, job id


class Executor:
    """The one retry/interrupt loop; a backend implements ``_attempt`` (one round) and ``_cancel``."""

    name = "base"
    #: Whether items run on other machines (a cluster's nodes), not on the one that submits them.
    runs_elsewhere = False

    def __init__(self, max_retries: int = 1) -> None:
        self.max_retries = _check_retries(max_retries)

    def _attempt(self, fn: Callable[[Any], Any], items: list[Any], indices: list[int]) -> Iterator[Attempt]:
        raise NotImplementedError

    def _cancel(self) -> None:
        """Stop what is still running (called on an interrupt)."""

    def _begin(self) -> None:
        """Reset a backend's per-run state (called once at the start of every ``run``)."""

    def run(
        self,
        fn: Callable[[Any], Any],
        items: Sequence[Any],
        keys: Sequence[str],
        on_done: Callable[[Outcome], None] | None = None,
    ) -> list[Outcome]:
        items, keys = _check_inputs(items, keys)
        self._begin()
        done: dict[str, Outcome] = {}
        attempts = [0] * len(items)
        todo = list(range(len(items)))
        try:
            while todo:
                for index in todo:
                    attempts[index] += 1
                again = []
                for index, ok, value, error, job_id in self._attempt(fn, items, todo):
                    if not ok and attempts[index] <= self.max_retries and retryable(error):
                        log.info("item %s failed (attempt %d), will retry", keys[index], attempts[index])
                        again.append(index)
                        continue
                    done[keys[index]] = Outcome(keys[index], ok, value, error, attempts[index], job_id)
                    if on_done is not None:
                        on_done(done[keys[index]])
                todo = sorted(again)
        except KeyboardInterrupt as exc:
            self._cancel()
            _report_interrupt(exc, self.name, keys, done)
            raise
        return [done[k] for k in keys]


# ---------------------------------------------------------------------------------------------- local


class LocalExecutor(Executor):
    """Sequential, in-process (the debug executor: breakpoints and profilers just work).

    A KeyboardInterrupt is not retried: it propagates after ``on_done`` was called for every finished
    item and a note listing finished/unfinished keys was added to it (and logged).
    """

    name = "local"

    def _attempt(self, fn: Callable[[Any], Any], items: list[Any], indices: list[int]) -> Iterator[Attempt]:
        for index in indices:
            yield (*_call(fn, index, items[index]), None)


# --------------------------------------------------------------------------------------------- joblib


class JoblibExecutor(Executor):
    """Local worker processes through joblib (loky backend); outcomes as items finish.

    A worker that dies (segfault, out of memory) fails the unfinished items of its round, which are
    retried like any failure that can pass.
    """

    name = "joblib"

    def __init__(self, n_jobs: int, max_retries: int = 1) -> None:
        if not isinstance(n_jobs, int) or n_jobs == 0:
            raise ValueError(f"n_jobs must be a non-zero integer (joblib semantics), got {n_jobs!r}")
        super().__init__(max_retries)
        self.n_jobs = n_jobs

    def _attempt(self, fn: Callable[[Any], Any], items: list[Any], indices: list[int]) -> Iterator[Attempt]:
        import joblib  # deferred: 0.2 s of imports that only this executor needs

        # Results as they finish (joblib >= 1.4, the version pyproject.toml requires).
        parallel = joblib.Parallel(n_jobs=self.n_jobs, backend="loky", return_as="generator_unordered")
        seen: set[int] = set()
        try:
            for index, ok, value, error in parallel(joblib.delayed(_call)(fn, i, items[i]) for i in indices):
                seen.add(index)
                yield index, ok, value, error, None
        except Exception as exc:  # a dead worker or an unpicklable item/result
            error = f"joblib worker failure: {_format_exception(exc)}"
            for index in indices:
                if index not in seen:
                    yield index, False, None, error, None


# ---------------------------------------------------------------------------------------------- slurm


class SlurmExecutor(Executor):
    """One Slurm job-array task per item, through submitit.

    Every ``run`` submits into a fresh sub-folder ``folder/<timestamp>-<random>/<job id>/`` (job ids
    restart after the accounting database is purged; a reused ``%j`` folder would return stale
    results). Items whose job failed (the function raised: ``FailedJobError``; the job died, timed out
    or was cancelled: ``UncompletedJobError``) are resubmitted in the next round when the failure can
    pass. Each outcome carries the Slurm job id of its last attempt (``"<array id>_<task>"``). On
    KeyboardInterrupt the unfinished jobs are cancelled before the interrupt propagates.

    Jobs run ``sys.executable`` of the submitting process with its environment (sbatch exports it),
    so the cluster sees the same Python installation; ``fn`` must be importable there.
    """

    runs_elsewhere = True
    name = "slurm"

    def __init__(
        self,
        folder: str | Path,
        partition: str | None = None,
        time_min: int = 60,
        gpus_per_node: int = 0,
        cpus_per_task: int = 1,
        mem_gb: float | None = None,
        max_retries: int = 1,
        poll_s: float = 1.0,
        job_name: str = "bgad-bench",
    ) -> None:
        if time_min < 1:
            raise ValueError(f"time_min must be >= 1, got {time_min!r}")
        if gpus_per_node < 0 or cpus_per_task < 1:
            raise ValueError("gpus_per_node must be >= 0 and cpus_per_task >= 1")
        if mem_gb is not None and mem_gb <= 0:
            raise ValueError(f"mem_gb must be positive, got {mem_gb!r}")
        if poll_s <= 0:
            raise ValueError(f"poll_s must be positive, got {poll_s!r}")
        super().__init__(max_retries)
        self.folder = Path(folder)
        self.partition = partition
        self.time_min = int(time_min)
        self.gpus_per_node = int(gpus_per_node)
        self.cpus_per_task = int(cpus_per_task)
        self.mem_gb = mem_gb
        self.poll_s = float(poll_s)
        self.job_name = job_name
        self.last_run_folder: Path | None = None
        self._executor: Any = None
        self._pending: dict[int, Any] = {}

    def _parameters(self) -> dict[str, Any]:
        params: dict[str, Any] = {
            "name": self.job_name,
            "timeout_min": self.time_min,
            "cpus_per_task": self.cpus_per_task,
        }
        if self.gpus_per_node:  # no --gpus-per-node=0: clusters without GRES reject it
            params["gpus_per_node"] = self.gpus_per_node
        if self.mem_gb is not None:
            params["mem_gb"] = self.mem_gb
        if self.partition is not None:
            params["slurm_partition"] = self.partition
        return params

    def _open(self) -> None:
        """The run's folder and submitit executor; a clear error when no cluster answers here."""
        import submitit  # deferred: 0.35 s of imports that only this executor needs

        if shutil.which("sbatch") is None:
            raise SubmissionError(
                "no Slurm cluster is reachable from this machine (`sbatch` is not on PATH); check with "
                "`sinfo`, or run with --executor local or --executor joblib"
            )
        run_folder = self.folder / f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}"
        run_folder.mkdir(parents=True, exist_ok=False)
        self.last_run_folder = run_folder
        self._executor = submitit.AutoExecutor(folder=run_folder / "%j", cluster="slurm")
        self._executor.update_parameters(**self._parameters())

    def _submit(self, fn: Callable[[Any], Any], items: list[Any], indices: list[int]) -> list[Attempt]:
        """Submit one round as a job array; a refused resubmission fails its items (returned)."""
        first = self._executor is None
        if first:
            self._open()
        try:
            jobs = self._executor.map_array(fn, [items[i] for i in indices])
        except Exception as exc:  # sbatch refused (submitit raises several types)
            if first:
                raise SubmissionError(
                    f"Slurm refused the job array: {exc}. Check the cluster with `sinfo` (partition, limits)."
                ) from exc
            return [(i, False, None, f"resubmission failed: {_format_exception(exc)}", None) for i in indices]
        self._pending = dict(zip(indices, jobs, strict=True))
        log.info("submitted %d item(s) as Slurm job %s", len(jobs), jobs[0].job_id.split("_")[0])
        return []

    def _attempt(self, fn: Callable[[Any], Any], items: list[Any], indices: list[int]) -> Iterator[Attempt]:
        from submitit.core.utils import UncompletedJobError  # deferred: as submitit in _open

        yield from self._submit(fn, items, indices)
        last_force = time.monotonic()
        while self._pending:
            time.sleep(self.poll_s)
            # Result files are checked on every poll; sacct (which sees jobs that died without a
            # result: time-outs, cancellations, node failures) at most every 5 polls, once for all.
            if time.monotonic() - last_force >= 5 * self.poll_s:
                next(iter(self._pending.values())).get_info(mode="force")
                last_force = time.monotonic()
            for index, job in list(self._pending.items()):
                if not job.done():
                    continue
                del self._pending[index]
                try:
                    value = job.result()
                except UncompletedJobError as exc:  # FailedJobError included
                    yield index, False, None, str(exc), job.job_id
                else:
                    yield index, True, value, None, job.job_id

    def _cancel(self) -> None:
        for job in self._pending.values():
            job.cancel(check=False)

    def _begin(self) -> None:
        self._executor, self._pending = None, {}


# ------------------------------------------------------------------------------------------- registry

EXECUTORS: Registry[Callable[..., Executor]] = Registry("executor")
EXECUTORS.register("local", LocalExecutor)
EXECUTORS.register("joblib", JoblibExecutor)
EXECUTORS.register("slurm", SlurmExecutor)


def make_executor(name: str, **options: Any) -> Executor:
    """Build the executor registered as ``name``; unknown or missing options are a ValueError."""
    factory = EXECUTORS.get(name)  # UnknownNameError lists the names and the closest match
    params = inspect.signature(factory).parameters
    unknown = sorted(set(options) - set(params))
    if unknown:
        raise ValueError(
            f"unknown option(s) {', '.join(map(repr, unknown))} for executor {name!r}; "
            f"valid options: {', '.join(params)}"
        )
    missing = [
        p.name for p in params.values() if p.default is inspect.Parameter.empty and p.name not in options
    ]
    if missing:
        raise ValueError(f"executor {name!r} needs option(s) {', '.join(map(repr, missing))}")
    return factory(**options)
