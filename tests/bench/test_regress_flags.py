"""`bgad-bench regress` and flagged values (diverged, tied): never compared as numbers, never passed silently."""

from __future__ import annotations

import copy
import math

import pandas as pd
from test_report import flag, make_record

from bgad.bench.protocols import load_protocol
from bgad.bench.regress import check_expectations, check_published, compare_rerun, tolerances


def _cells(profile: str) -> list[dict]:
    return [make_record("brainmri", "brainmri", "bgad", s, {"image_auroc": 0.74}, profile) for s in (0, 1)]


def test_a_paper_cell_whose_every_seed_is_flagged_fails_against_the_paper() -> None:
    tol = tolerances()["paper"]
    protocol = load_protocol("one_anomaly")
    [ok] = check_published([protocol], _cells("paper"), tol)
    assert not ok.failed
    [check] = check_published([protocol], [flag(r, "image_auroc", "diverged") for r in _cells("paper")], tol)
    assert check.failed and check.note == "every seed flagged diverged"
    [check] = check_published([protocol], [flag(r, "image_auroc", "diverged") for r in _cells("cpu")], tol)
    assert not check.failed and "flagged diverged, not failed" in check.note


def test_expectations_and_reruns_name_the_flag() -> None:
    tol = tolerances()["expectations"]
    committed = _cells("cpu")[0]
    expected = pd.DataFrame([{"cell_id": committed["cell_id"], "metric": "image_auroc", "value": 0.74}])
    fresh = flag(copy.deepcopy(committed), "image_auroc", "tied")
    [check] = check_expectations([fresh], expected, tol)
    assert check.failed and check.note == "flagged tied in the store: no value"
    [check] = [c for c in compare_rerun(committed, fresh, tol) if c.what.endswith("image_auroc")]
    assert check.failed and math.isnan(check.ours) and "re-run tied" in check.note
    [check] = [c for c in compare_rerun(fresh, copy.deepcopy(fresh), tol) if c.what.endswith("image_auroc")]
    assert not check.failed  # the same flag twice agrees
