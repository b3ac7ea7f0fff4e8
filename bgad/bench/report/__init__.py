"""Paper-layout tables from the result store, with the published numbers and our difference beside them.

Three parts, each one job: ``tables`` (which records each table shows; means over seeds, intervals,
published values), ``render`` (Markdown, LaTeX and CSV in the paper's layout) and ``index`` (the
reports folder: tables, figures and the index that names them). Reports read records only: they
never train or score.
"""

from bgad.bench.report.index import render_reports, write_index
from bgad.bench.report.render import latex_escape, render_latex, render_markdown, write_report
from bgad.bench.report.tables import (
    assign_records,
    interval,
    match_records,
    open_store,
    paired_test,
    published_columns,
    record_problems,
    summarize,
)

__all__ = [
    "assign_records",
    "interval",
    "latex_escape",
    "match_records",
    "open_store",
    "paired_test",
    "published_columns",
    "record_problems",
    "render_latex",
    "render_markdown",
    "render_reports",
    "summarize",
    "write_index",
    "write_report",
]
