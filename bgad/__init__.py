"""bgad-bench: reproduction suite for BGAD (explicit boundary guided semi-push-pull contrastive learning).

The Python API (``bgad.api``), importable from here::

    import bgad
    record = bgad.run_cell("nfad", "synthetic", "widget", results="runs", save_model=True)
    frame = bgad.load_results("runs")
    scores = bgad.predict(bgad.load_model(record["folder"]), ["image.png"])

Names are loaded on first use, so ``import bgad`` stays light.
"""

__version__ = "0.1.0"

# Bumped whenever a change can move a cell's numbers: part of every cell id, so results of older code
# are never taken as done (the git commit is recorded too, but is not part of the id).
RESULT_VERSION = 1

__all__ = [
    "load_model",
    "load_results",
    "plan_grid",
    "predict",
    "run_cell",
    "run_grid",
    "write_report",
]


def __getattr__(name: str):  # noqa: ANN202
    if name in __all__:
        from bgad import api

        return getattr(api, name)
    raise AttributeError(f"module 'bgad' has no attribute {name!r}")
