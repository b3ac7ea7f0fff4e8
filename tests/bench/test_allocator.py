"""Tests for bgad.bench.allocator: glibc's malloc thresholds, applied once, never over the user's own, and
with the effect they are there for (no page faults for a reused large block)."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest

glibc_only = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="mallopt needs Linux with glibc"
)


def _child(code: str, **env: str) -> dict:
    """Run ``code`` in a fresh interpreter (mallopt is process-wide) and parse the JSON it prints."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"}
    out = subprocess.run(
        [sys.executable, "-c", code], env=clean | env, capture_output=True, text=True, check=True, timeout=120
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


@glibc_only
def test_tune_malloc_applies_once_and_reports_it() -> None:
    state = _child(
        "import json; from bgad.bench.allocator import malloc_settings, tune_malloc;"
        "before = malloc_settings(); first = tune_malloc(); again = tune_malloc(123);"
        "print(json.dumps([before, first, again, malloc_settings()]))"
    )
    before, first, again, after = state
    assert before["tuned"] is False
    assert first["tuned"] is True and first["mmap_threshold"] == first["trim_threshold"] == 1 << 30
    assert first["libc"].startswith("glibc")
    assert again == first == after  # a second call keeps the first one's values


@glibc_only
@pytest.mark.parametrize(
    "env", [{"MALLOC_MMAP_THRESHOLD_": "65536"}, {"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=1"}]
)
def test_tune_malloc_leaves_the_users_own_settings_alone(env: dict[str, str]) -> None:
    state = _child(
        "import json; from bgad.bench.allocator import tune_malloc; print(json.dumps(tune_malloc()))", **env
    )
    assert state["tuned"] is False
    assert "user's own settings" in state["reason"]


FAULTS = """
import json, resource, sys
import torch
from bgad.bench.allocator import tune_malloc
if sys.argv[-1] == "tuned":
    tune_malloc()
torch.set_num_threads(1)
torch.manual_seed(0)
conv = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(16, 16, 3, padding=1))
x = torch.rand(4, 3, 256, 256)  # 16 MiB activations, like a backbone's first stages
with torch.no_grad():
    for _ in range(3):
        conv(x)
    faults = []
    for _ in range(9):
        start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        conv(x)
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start)
print(json.dumps(faults))
"""


@glibc_only
def test_tuned_thresholds_reuse_large_blocks_instead_of_faulting_them_in() -> None:
    """With glibc's defaults a freed activation goes back to the kernel and the next pass faults it in
    again (thousands of page faults per pass); with the raised thresholds the blocks are reused."""

    def faults(mode: str) -> list[int]:
        out = subprocess.run(
            [sys.executable, "-c", FAULTS, mode], capture_output=True, text=True, check=True, timeout=120
        )
        return json.loads(out.stdout.strip().splitlines()[-1])

    default, tuned = faults("default"), faults("tuned")
    # the median pass: an occasional heap extension (a pass that does fault) is not the rule
    median_default, median_tuned = sorted(default)[4], sorted(tuned)[4]
    assert median_default > 1000, default  # one 16 MiB block is 4096 faults of 4 KiB pages
    assert median_tuned < median_default / 20, (default, tuned)
