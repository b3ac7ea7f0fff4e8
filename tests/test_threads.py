"""The thread governor: how many threads for how many free cores, and that it really sets torch's count."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
import torch

from bgad import threads
from bgad.threads import ThreadGovernor, fitting_threads, governed_threads, other_runnable_threads


@pytest.mark.parametrize(
    ("max_threads", "cpus", "others", "machine", "expected"),
    [
        (2, 2, 0.0, 2, 2),  # quiet machine: all cores
        (2, 2, 1.0, 2, 1),  # one busy thread elsewhere: one core left
        (2, 2, 4.0, 2, 1),  # overloaded: never below one
        (8, 8, 2.0, 8, 6),
        (4, 8, 0.0, 8, 4),  # capped by the requested maximum
        (2, 2, None, 2, 2),  # load unknown: all usable cores
        (4, 4, 32.0, 64, 2),  # a 4-core cgroup on a 64-core host: 32 busy threads are 2 on our share
    ],
)
def test_fitting_threads(max_threads, cpus, others, machine, expected) -> None:
    assert fitting_threads(max_threads, cpus, others, machine) == expected


def test_other_runnable_threads_sees_a_busy_process() -> None:
    if other_runnable_threads(samples=1) is None:
        pytest.skip("/proc/loadavg is not readable on this system")
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)
        busy = other_runnable_threads(samples=9)
    finally:
        spinner.kill()
        spinner.wait()
    assert busy is not None and busy >= 1  # the spinner is runnable, whether on a core or waiting


def test_fixed_governor_sets_and_keeps_the_count() -> None:
    before = torch.get_num_threads()
    with governed_threads(1) as governor:
        assert torch.get_num_threads() == 1
        threads.tick()
        assert governor.usage()["mode"] == "fixed"
        assert governor.usage()["changes"] == 0
    assert torch.get_num_threads() == before


def test_governor_follows_the_load(monkeypatch: pytest.MonkeyPatch) -> None:
    load = {"others": 0.0}
    monkeypatch.setattr(threads, "other_runnable_threads", lambda: load["others"])
    monkeypatch.setattr(threads, "usable_cpus", lambda: 2)
    before = torch.get_num_threads()
    try:
        governor = ThreadGovernor(interval_s=0.0)
        assert governor.tick() == 2
        load["others"] = 3.0
        assert governor.tick() == 1 and torch.get_num_threads() == 1
        load["others"] = 0.0
        assert governor.tick() == 2 and torch.get_num_threads() == 2
        usage = governor.usage()
        assert usage["changes"] == 2
        assert set(usage["seconds_per_thread_count"]) == {"1", "2"}
    finally:
        torch.set_num_threads(before)


def test_usable_cpus_respects_the_affinity_mask() -> None:
    assert 1 <= threads.usable_cpus() <= len(os.sched_getaffinity(0))
