"""bgad-bench: reproduction suite for BGAD (explicit boundary guided semi-push-pull contrastive learning).

The Python API (``bgad.bench.api``: plan and run cells, load results, report, predict) is importable
from here, e.g. ``bgad.run_cell("nfad", "synthetic", "widget", results="runs")``; the README has
an example that runs as written.

Names are loaded on first use, so ``import bgad`` stays light.
"""

__version__ = "0.1.0"

__all__ = [
    "load_model",
    "load_results",
    "plan_grid",
    "predict",
    "run_cell",
    "run_grid",
    "write_report",
]


def __getattr__(name: str):
    if name in __all__:
        from bgad.bench import api

        return getattr(api, name)
    raise AttributeError(f"module 'bgad' has no attribute {name!r}")
