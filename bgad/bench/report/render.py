"""The tables of a protocol as Markdown, LaTeX and CSV, laid out as the paper prints them.

One table per profile × metric × epoch selection, so numbers of two settings never share a table:
the paper's rows in print order, the methods in the paper's column order with its published numbers
beside ours (``bgad.bench.report.tables`` computes them).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from bgad.bench.protocols import Protocol
from bgad.bench.report.tables import (
    MEAN_ROW,
    PAIRED_METHODS,
    PAPER_METHOD_NAMES,
    PUBLISHED,
    REFERENCE_METHODS,
    SOURCE_TITLES,
    Column,
    Row,
    assign_records,
    natural_key,
    paired_test,
    paper_rows,
    paper_table,
    published_columns,
    published_parts,
    summarize,
)
from bgad.fileio import atomic_write_text, atomic_write_with
from bgad.metrics import DIVERGED_LOSS, FLAG_TEXT, METRIC_LABELS, TIE_SPREAD


@dataclass(frozen=True)
class TableLayout:
    """Row keys and column keys of one rendered table (one per profile × metric × epoch selection), and
    our methods whose published numbers stand in columns of their own beside ours (DevNet, DRA)."""

    rows: list[Row]
    columns: list[Column]
    beside: frozenset[str] = frozenset()


def _layout(protocol: Protocol, summary: pd.DataFrame, metric: str) -> TableLayout:
    """Rows: the paper's in print order, then ours it does not print; columns: see ``_column_order``."""

    def row_key(r: Row) -> tuple:
        dataset, cat, dt = r
        return (dataset, cat == MEAN_ROW, cat, dt == MEAN_ROW, dt)

    ours = sorted({(r.dataset, r.category, r.defect_type) for r in summary.itertuples()}, key=row_key)
    rows = list(dict.fromkeys([*paper_rows(protocol, metric), *ours]))
    columns = sorted({(r.method, r.column) for r in summary.itertuples()}, key=_column_order(protocol))
    printed = {published_parts(m)[1] for m, _ in columns if m.startswith(PUBLISHED)}
    beside = {
        m for m, _ in columns if not m.startswith(PUBLISHED) and PAPER_METHOD_NAMES.get(m, m) in printed
    }
    return TableLayout(rows, columns, frozenset(beside))


def _split_variant(protocol: Protocol, label: str) -> tuple[str, str]:
    """(variant, the rest) of a column label: in a protocol of several variants, ours and the published
    columns' labels start with their variant's name (the column group: DRA's "10 known")."""
    named = [v.name for v in protocol.variants if label == v.name or label.startswith(f"{v.name} ")]
    variant = max(named, key=len) if named else ""
    return variant, label.removeprefix(variant).strip()


def _column_order(protocol: Protocol) -> Callable[[Column], tuple]:
    """Sort key of a column, so a table reads like the paper's: the protocol's variants in order (its
    column groups), in each the methods the paper prints in its column order (ours, e.g. BGAD, where the
    paper prints it; our run of a method before its published columns, in the protocol's order of
    sources), then our other methods (NFAD), then the reference baselines we add; one method's
    columns by grid value."""
    table = paper_table(protocol)
    printed = list(dict.fromkeys(table["method"])) if not table.empty else []
    methods = list(protocol.methods)
    variants = [v.name for v in protocol.variants]
    sources = list(dict.fromkeys(ref.source for ref in protocol.published))

    def key(column: Column) -> tuple:
        method, label = column
        source, name = published_parts(method)
        if PAPER_METHOD_NAMES.get(name, name) in printed:
            rank = (0, printed.index(PAPER_METHOD_NAMES.get(name, name)))
        else:
            rank = (
                2 if method in REFERENCE_METHODS else 1,
                methods.index(name) if name in methods else len(methods),
            )
        variant, rest = _split_variant(protocol, label)
        group = variants.index(variant) if variant else -1
        return (group, *rank, name, sources.index(source) + 1 if source else 0, natural_key(rest))

    return key


def _row_label(row: Row) -> str:
    dataset, category, _ = row
    return category if category == dataset else f"{dataset}/{category}"


def _column_title(protocol: Protocol, layout: TableLayout, method: str, column: str) -> str:
    """``10 known: devnet (measured)``, ``10 known: DevNet [published, DRA paper]``: the column group
    first, a published column by the paper's header, ours by method (``(measured)`` where published
    columns of the same method stand beside it)."""
    variant, rest = _split_variant(protocol, column)
    if method.startswith(PUBLISHED):
        title = rest  # the paper's own column name, marked [published]
    else:
        marks = (" (ref.)" if method in REFERENCE_METHODS else "") + (
            " (measured)" if method in layout.beside else ""
        )
        title = f"{method}{marks}" + (f" {rest}" if rest else "")
    return f"{variant}: {title}" if variant and not protocol.variant_tables else title


def _cell_text(cell: pd.Series | None, latex: bool = False, paper_inline: bool = True) -> str:
    """A cell's text; ``paper_inline=False`` leaves out the bracketed published value (it has a column)."""
    if cell is None:
        return "--" if latex else "—"
    pm = "$\\pm$" if latex else "±"
    flagged = cell.get("n_flagged", 0)  # NaN in a published row
    if flagged > 0 and cell["n_seeds"] == 0:  # every seed flagged: the reason, never a number
        return _flag_text(cell, latex)
    if cell["n_seeds"] == 0:  # a published number: with the paper's ± where it printed one
        return f"{cell['mean']:.3f}" + (f" {pm} {cell['std']:.3f}" if not math.isnan(cell["std"]) else "")
    text = f"{cell['mean']:.3f} {pm} {cell['std']:.3f}" if cell["n_seeds"] > 1 else f"{cell['mean']:.3f}"
    if paper_inline and not math.isnan(cell["published"]):
        sign = "+" if cell["diff"] >= 0 else ("-" if latex else "−")
        paper_pm = cell.get("published_pm", math.nan)
        printed = f"{cell['published']:.3f}" + (f" {pm} {paper_pm:.3f}" if paper_pm == paper_pm else "")
        text += f" (paper {printed}, {sign}{abs(cell['diff']):.3f})"
        if cell["flag"]:
            text += " \\textdagger" if latex else " ⚑"
    if flagged > 0:
        text += f" [{int(flagged)} seed(s) {cell['flagged_as']}, left out]"
    return text


def _flag_text(cell: pd.Series, latex: bool) -> str:
    """A cell whose every seed is flagged: ``diverged``, ``tied (—)``, with the count of seeds."""
    text = " / ".join(FLAG_TEXT[f] for f in cell["flagged_as"].split("/"))
    if cell["n_flagged"] > 1:
        text += f" ({int(cell['n_flagged'])} seeds)"
    return text.replace("—", "---") if latex else text


def _table_rows(part: pd.DataFrame, layout: TableLayout, latex: bool) -> list[list[str]]:
    """Cell texts per row, the best mean of each row in bold (only when there is a choice)."""
    cells = {
        (r["dataset"], r["category"], r["defect_type"], r["method"], r["column"]): r
        for _, r in part.iterrows()
    }
    out = []
    for row in layout.rows:
        present = [
            cells[(*row, *col)]["mean"]
            for col in layout.columns
            if (*row, *col) in cells and cells[(*row, *col)]["n_seeds"] > 0
        ]
        top = max(present) if present else math.nan
        texts = []
        for col in layout.columns:
            cell = cells.get((*row, *col))
            text = _cell_text(cell, latex, paper_inline=col[0] not in layout.beside)
            ours = cell is not None and cell["n_seeds"] > 0
            if ours and len(present) > 1 and math.isclose(cell["mean"], top, abs_tol=5e-4):
                text = f"\\textbf{{{text}}}" if latex else f"**{text}**"
            texts.append(text)
        out.append(texts)
    return out


def profile_rank(profile: str) -> tuple:
    return (profile != "paper", profile)  # the paper's setting first


@dataclass(frozen=True)
class TableKey:
    """What one rendered table shows: a profile, a metric, an epoch selection and, in a protocol whose
    variants are tables of their own (``variant_tables``), one variant ("" otherwise)."""

    profile: str
    metric: str
    selection: str
    variant: str = ""

    def title(self) -> str:
        head = f"Profile {self.profile}: {METRIC_LABELS[self.metric]}, {_selection_title(self.selection)}"
        return head + (f" — {self.variant}" if self.variant else "")


def _tables(protocol: Protocol, summary: pd.DataFrame) -> Iterator[tuple[TableKey, pd.DataFrame]]:
    """Each rendered table and its cells: one per profile × metric × epoch selection (× variant where the
    protocol says so: DRA's 10 and 1 known are two tables, as its paper's two column groups would make
    one too wide), so numbers of two settings never share a table; the paper's other methods in each."""
    published = summary["method"].str.startswith(PUBLISHED)
    ours = summary[~published]
    variants = [v.name for v in protocol.variants] if protocol.variant_tables else [""]
    for profile in sorted(set(ours["profiles"]), key=profile_rank):
        mine = ours[ours["profiles"] == profile]
        for (metric, selection), part in mine.groupby(["metric", "selection"], sort=False):
            others = summary[published & (summary["metric"] == metric) & (summary["selection"] == selection)]
            cells = pd.concat([part, others], ignore_index=True)
            for variant in variants:
                shown = _of_variant(protocol, cells, variant)
                if not shown[~shown["method"].str.startswith(PUBLISHED)].empty:
                    yield TableKey(profile, metric, selection, variant), shown


def _of_variant(protocol: Protocol, frame: pd.DataFrame, variant: str) -> pd.DataFrame:
    """The rows of ``frame`` (cells or records, by their ``column``) of one variant ("": all)."""
    if not variant:
        return frame
    return frame[[_split_variant(protocol, c)[0] == variant for c in frame["column"]]]


def _selection_title(selection: str) -> str:
    return (
        "last epoch"
        if selection == "last"
        else "best epoch per metric (paper-compatible, chosen on the test set)"
    )


def _paired_test_lines(
    matched: pd.DataFrame,
    metric: str,
    selection: str,
    a: str,
    b: str,
    unit: str = "(dataset, category, seed)",
) -> list[str]:
    """``a`` vs ``b`` (BGAD vs NFAD, BGAD vs each competitor), one test per column of one profile's
    records (a variant, a grid point, an off-profile setting) where both ran: pairs never cross columns,
    and a column's test never pools cells of another setting. Too few pairs are said, not hidden."""
    lines = []
    columns = sorted(set(matched["column"]), key=natural_key)
    for column in columns:
        part = matched[matched["column"] == column]
        if not {a, b} <= set(part["method"]):
            continue
        test = paired_test(part, metric, a, b, selection)
        where = f" ({column})" if len(columns) > 1 and column else ""
        head = f"Paired Wilcoxon test{where}, {a} vs {b}"
        if test is None or math.isnan(test["p_value"]):
            n = 0 if test is None else test["n"]
            lines += [f"{head}: {n} {unit} pair(s), too few to test.", ""]
            continue
        lines += [
            f"{head} over {test['n']} {unit} pairs: "
            f"median difference {test['median_diff']:+.4f}, p = {test['p_value']:.3g}.",
            "",
        ]
    return lines


def _pair_unit(protocol: Protocol) -> str:
    """What a paired test pairs: cells of one dataset, category (and defect type) and seed."""
    return "(dataset, category, defect type, seed)" if protocol.expand else "(dataset, category, seed)"


def render_markdown(
    protocol: Protocol, summary: pd.DataFrame, matched: pd.DataFrame, left_out: str = ""
) -> str:
    """The protocol's tables, one per profile × metric × epoch selection; ``left_out`` says which
    records of the protocol are not in them and where they are."""
    lines = [f"# {protocol.name}", "", protocol.description, "", f"Source: {protocol.source}", ""]
    if summary.empty:
        return "\n".join([*lines, "_No results in the store for this protocol yet._", ""])
    lines += _provenance_lines(matched) + ([left_out, ""] if left_out else [])
    beside: set[str] = set()
    for key, part in _tables(protocol, summary):
        layout = _layout(protocol, part, key.metric)
        lines += [f"## {key.title()}", ""]
        header = [
            "dataset/category",
            *(["defect type"] if protocol.expand else []),
            *(_column_title(protocol, layout, m, c) for m, c in layout.columns),
        ]
        lines += ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
        for row, texts in zip(layout.rows, _table_rows(part, layout, latex=False), strict=True):
            lead = [_row_label(row), *([row[2] or "—"] if protocol.expand else [])]
            lines.append("| " + " | ".join(lead + texts) + " |")
        lines.append("")
        beside |= layout.beside
        mine = _of_variant(protocol, matched[matched["profile"] == key.profile], key.variant)
        for a, b in PAIRED_METHODS:
            if {a, b} <= set(part["method"]):
                lines += _paired_test_lines(mine, key.metric, key.selection, a, b, _pair_unit(protocol))
    if summary.get("n_flagged", pd.Series(dtype=float)).gt(0).any():
        lines += [FLAGGED_NOTE, ""]
    return "\n".join([*lines, _cells_note(protocol, bool(beside)), ""])


def _cells_note(protocol: Protocol, beside: bool) -> str:
    """How to read the cells and columns; names every published table the columns come from."""
    sources = "; ".join(
        f"{r.source} {r.table}" + (f" ({SOURCE_TITLES[r.source]})" if r.source in SOURCE_TITLES else "")
        for r in protocol.published
    )
    text = (
        "Cells: mean ± std over seeds (a single seed shows its value). In brackets: the published value (with the "
        "paper's ± where it printed one) and our difference; ⚑ marks a cell whose 95 % interval over seeds excludes "
        "the published value. Bold: our best in the row. (ref.) marks reference baselines we add. Columns marked "
        f"[published] are the paper's numbers for methods not run here, copied from {sources or 'the paper'} "
        "(protocols/published/). — marks a row the paper prints that has not been run here (or a cell without a value)."
    )
    if beside:
        text += (
            " (measured) marks our runs of a supervised competitor whose published numbers stand in the columns "
            "beside it, one per paper that printed them; its cells carry no bracketed value."
        )
    return text


FLAGGED_NOTE = (
    f"`diverged`: the mean training loss exceeded {DIVERGED_LOSS:g} (or was not finite), so every metric of that "
    f"evaluation is meaningless; `tied (—)`: the scores were equal to within {TIE_SPREAD:g} of their size, so the "
    "metric is undefined. Such a value is never averaged: a cell shows the mean of its other seeds and how many "
    "were left out."
)


def _provenance_lines(matched: pd.DataFrame) -> list[str]:
    setups = matched.groupby(["profile", "backbone", "input_size"]).size()
    lines = ["Produced by:"]
    for (profile, backbone, size), n in setups.items():
        note = (
            ""
            if profile == "paper"
            else " — not the paper's setting: compare with the published values for direction, not level"
        )
        lines.append(f"- {n} cell(s) with profile `{profile}`, backbone `{backbone}`, input {size}²{note}")
    return [*lines, ""]


_LATEX_ESCAPES = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
}


def latex_escape(text: str) -> str:
    return "".join(_LATEX_ESCAPES.get(ch, ch) for ch in text)


def render_latex(protocol: Protocol, summary: pd.DataFrame) -> str:
    """One booktabs table per profile × metric × epoch selection."""
    if summary.empty:
        return f"% {latex_escape(protocol.name)}: no results yet\n"
    blocks = [f"% {latex_escape(protocol.name)}: generated by bgad-bench report; do not edit by hand"]
    for key, part in _tables(protocol, summary):
        layout = _layout(protocol, part, key.metric)
        spec = "l" * (2 if protocol.expand else 1) + "c" * len(layout.columns)
        header = [
            "Dataset/category",
            *(["Defect type"] if protocol.expand else []),
            *(_column_title(protocol, layout, m, c) for m, c in layout.columns),
        ]
        caption = f"{protocol.name}: {key.title()}"
        body = []
        for row, texts in zip(layout.rows, _table_rows(part, layout, latex=True), strict=True):
            lead = [
                latex_escape(_row_label(row)),
                *([latex_escape(row[2] or "--")] if protocol.expand else []),
            ]
            body.append(" & ".join(lead + texts) + r" \\")
        blocks += [
            r"\begin{table}[t]",
            r"\centering",
            rf"\caption{{{latex_escape(caption)}}}",
            rf"\begin{{tabular}}{{{spec}}}",
            r"\toprule",
            " & ".join(latex_escape(h) for h in header) + r" \\",
            r"\midrule",
            *body,
            r"\bottomrule",
            r"\end{tabular}",
            r"\end{table}",
            "",
        ]
    return "\n".join(blocks)


def write_report(protocols: list[Protocol], records: list[dict], out_dir: Path) -> list[Path]:
    """Markdown, LaTeX and CSV per protocol that has results (last and best-epoch selections)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for table in assign_records(protocols, records):
        protocol, matched = table.protocol, table.shown
        published = published_columns(protocol, set(matched["method"]))
        summary = pd.concat(
            [summarize(protocol, matched, sel) for sel in ("last", "best")]
            + [published.assign(selection=sel) for sel in ("last", "best") if not published.empty],
            ignore_index=True,
        )
        for suffix, text in (
            (".md", render_markdown(protocol, summary, matched, table.left_out_note())),
            (".tex", render_latex(protocol, summary)),
        ):
            written.append(_write_text(out_dir / f"{protocol.name}{suffix}", text))
        csv_path = out_dir / f"{protocol.name}.csv"
        atomic_write_with(csv_path, lambda tmp, frame=summary: frame.to_csv(tmp, index=False))
        written.append(csv_path)
    return written


def _write_text(path: Path, text: str) -> Path:
    atomic_write_text(path, text)
    return path
