"""Torch's CPU thread count, fitted to the cores this process can really use, while it runs.

Why: torch's intra-op pool is GNU OpenMP. Each parallel region ends at a barrier where the finished
threads spin for a while before they sleep. When the cores are shared (other ``bgad-bench`` cells,
a compile, a second user), a thread of ours is often descheduled; its partner then spins through its
time slice waiting for it, and everybody's work stalls. Measured on a 2-core machine, the README's
main job took 60 s alone and 8+ minutes per copy with three copies at once (fair share: 3 minutes).
``OMP_WAIT_POLICY=PASSIVE`` cures the stall but doubles the quiet time (60 → 118 s: every one of the
flows' many small parallel regions then waits for a futex wake-up), and a shorter spin
(``GOMP_SPINCOUNT=30000``) still took 474 s per copy. One thread needs no barrier at all: three
single-threaded copies took 153 s each. So the default is to run with as many threads as there are
cores that nobody else is using, re-checked about once a second:

* the cores this process may use: its CPU affinity mask (Slurm, ``taskset``) and its cgroup's CPU
  quota (containers), never more than ``max_threads``;
* minus the threads of other processes that are runnable right now (the kernel's ``nr_running``
  from ``/proc/loadavg`` minus our own running threads, median of a few samples), scaled to our
  share of the machine when the mask or quota gives us fewer cores than the machine has;
* at least one.

The thread count can change the last bits of a float sum, so cells are bitwise reproducible only at
a fixed thread count: ``threads=N`` (``--threads N``) fixes it; every result records the counts used.
"""

from __future__ import annotations

import contextlib
import math
import os
import statistics
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import torch

# OpenMP/BLAS environment variables that change how threads wait or how many there are (provenance).
THREAD_ENVIRONMENT = (
    "OMP_NUM_THREADS",
    "OMP_WAIT_POLICY",
    "GOMP_SPINCOUNT",
    "OMP_DYNAMIC",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
)


def usable_cpus() -> int:
    """Cores this process may run on: the affinity mask, capped by the cgroup (v2 or v1) CPU quota."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        cpus = os.cpu_count() or 1
    quota = _cgroup_quota()
    if quota is not None:
        cpus = min(cpus, max(1, math.ceil(quota)))
    return max(1, cpus)


def _cgroup_quota() -> float | None:
    """CPUs granted by the cgroup's quota (``cpu.max`` or ``cpu.cfs_quota_us``), None when unlimited."""
    v2 = Path("/sys/fs/cgroup/cpu.max")
    try:
        if v2.exists():
            quota, period = v2.read_text().split()[:2]
            return None if quota == "max" else int(quota) / int(period)
        v1 = Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us")
        if v1.exists():
            quota_us = int(v1.read_text())
            period_us = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read_text())
            return None if quota_us <= 0 else quota_us / period_us
    except (OSError, ValueError):
        return None
    return None


def _own_running_threads() -> int:
    """Threads of this process in state R (running or runnable) right now."""
    count = 0
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        return 1
    for tid in tasks:
        try:
            stat = Path(f"/proc/self/task/{tid}/stat").read_text()
        except OSError:  # the thread ended meanwhile
            continue
        if stat[stat.rindex(")") + 2] == "R":
            count += 1
    return max(count, 1)


def other_runnable_threads(samples: int = 5, gap_s: float = 0.002) -> float | None:
    """Median number of runnable threads of other processes, machine-wide; None where unknown."""
    values = []
    for i in range(samples):
        try:
            running = int(Path("/proc/loadavg").read_text().split()[3].split("/")[0])
        except (OSError, ValueError, IndexError):
            return None
        values.append(max(running - _own_running_threads(), 0))
        if i + 1 < samples:
            time.sleep(gap_s)
    return float(statistics.median(values))


def fitting_threads(max_threads: int, cpus: int, others: float | None, machine_cpus: int) -> int:
    """Threads to run with: free cores (ours minus others' share of them), within [1, max_threads].

    Other processes' runnable threads are spread over the whole machine; when we may use only
    ``cpus`` of its ``machine_cpus`` cores, we expect that share of them on ours.
    """
    if others is None:
        return max(1, min(max_threads, cpus))
    on_ours = others * cpus / max(machine_cpus, cpus)
    return max(1, min(max_threads, math.floor(cpus - on_ours + 0.5)))


class ThreadGovernor:
    """Keeps torch's thread count fitted to the free cores; ``tick()`` re-checks at most every ``interval_s``.

    ``fixed`` (a thread count) turns the adaptation off. ``usage()`` says which counts ran and how
    often they changed, for the result's provenance.
    """

    def __init__(self, max_threads: int | None = None, fixed: int | None = None, interval_s: float = 1.0):
        self.cpus = usable_cpus()
        self.machine_cpus = os.cpu_count() or self.cpus
        self.fixed = fixed
        self.max_threads = fixed or max_threads or self.cpus
        self.interval_s = interval_s
        self._checked = -math.inf
        self._since = time.perf_counter()
        self._current = 0
        self._seconds: Counter[int] = Counter()
        self.changes = 0
        self._apply(self.fixed or fitting_threads(self.max_threads, self.cpus, None, self.machine_cpus))

    def _apply(self, threads: int) -> None:
        now = time.perf_counter()
        if self._current:
            self._seconds[self._current] += now - self._since
        self._since = now
        if threads != self._current:
            if self._current:
                self.changes += 1
            torch.set_num_threads(threads)
            self._current = threads

    @property
    def threads(self) -> int:
        return self._current

    def tick(self) -> int:
        """Re-fit the thread count if ``interval_s`` has passed since the last check; returns it."""
        if self.fixed is not None:
            return self._current
        now = time.perf_counter()
        if now - self._checked >= self.interval_s:
            self._checked = now
            others = other_runnable_threads()
            self._apply(fitting_threads(self.max_threads, self.cpus, others, self.machine_cpus))
        return self._current

    def usage(self) -> dict:
        self._apply(self._current)  # close the running interval
        return {
            "mode": "fixed" if self.fixed is not None else "fitted to free cores",
            "max_threads": self.max_threads,
            "usable_cpus": self.cpus,
            "machine_cpus": self.machine_cpus,
            "seconds_per_thread_count": {str(k): round(v, 2) for k, v in sorted(self._seconds.items())},
            "changes": self.changes,
        }


_active: ThreadGovernor | None = None


@contextlib.contextmanager
def governed_threads(threads: int | None, max_threads: int | None = None) -> Iterator[ThreadGovernor]:
    """Run a block under a governor: ``threads`` fixes the count, None fits it to the free cores."""
    global _active
    previous_threads = torch.get_num_threads()
    previous, _active = _active, ThreadGovernor(max_threads=max_threads, fixed=threads)
    try:
        yield _active
    finally:
        _active = previous
        torch.set_num_threads(previous_threads)


def tick() -> None:
    """Let the active governor (if any) re-fit the thread count; call between units of work."""
    if _active is not None:
        _active.tick()


def thread_environment() -> dict[str, str | None]:
    """The OpenMP/BLAS variables in effect (they change how threads wait), for provenance."""
    return {name: os.environ.get(name) for name in THREAD_ENVIRONMENT}
