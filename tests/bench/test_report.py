"""Reports from a fixture store: golden Markdown, well-formed LaTeX, statistics, figures."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bgad.bench.protocols import load_protocol
from bgad.bench.report import (
    interval,
    latex_escape,
    match_records,
    paired_test,
    render_latex,
    render_markdown,
    summarize,
    write_report,
)
from bgad.bench.store import ResultStore
from bgad.metrics import METRIC_VARIANTS

GOLDEN = Path(__file__).parent / "golden"

# image AUROC per (dataset, method, seed): a fixed, hand-chosen fixture (not a measurement)
VALUES = {
    ("brainmri", "bgad"): (0.70, 0.72, 0.74),
    ("brainmri", "nfad"): (0.66, 0.65, 0.70),
    ("aitex", "bgad"): (0.81, 0.83, 0.82),
    ("aitex", "nfad"): (0.75, 0.78, 0.74),
}


def make_record(
    dataset: str, category: str, method: str, seed: int, metrics: dict, profile: str = "quick", **config
) -> dict:
    cfg = {
        "dataset": dataset,
        "category": category,
        "method": method,
        "seed": seed,
        "profile": profile,
        "backbone": "tf_efficientnet_lite0",
        "input_size": 128,
        "n_known_anomalies": 1,
        "beta": 0.01,
        "tau": 0.1,
        "racp": True,
        "focal": True,
        "anomaly_selection": "multi_class",
        "anomaly_defect_type": None,
        "train_types": None,
        "test_types": None,
        **config,
    }
    cell_id = f"{dataset}-{category}-{method}-seed{seed}-{profile}{abs(hash(json.dumps(config, sort_keys=True))) % 1000:03d}"
    per_epoch = [{"meta_epoch": 0, **{k: v - 0.05 for k, v in metrics.items()}}, {"meta_epoch": 1, **metrics}]
    return {
        "cell_id": cell_id,
        "status": "complete",
        "config": cfg,
        "config_hash": "x",
        "dataset": {"manifest_sha256": "m"},
        "provenance": {"git": {"commit": "c"}},
        "timing_seconds": {"total": 1.0},
        "metrics": {
            "variants": dict(METRIC_VARIANTS),
            "per_epoch": per_epoch,
            "last_epoch": {**metrics, "meta_epoch": 1},
            "best_per_metric_paper_compatible": {
                k: {"value": v, "meta_epoch": 1} for k, v in metrics.items()
            },
        },
    }


def write_store(root: Path, records: list[dict]) -> ResultStore:
    store = ResultStore(root)
    for rec in records:
        folder = store.cell_dir(rec["cell_id"])
        folder.mkdir(parents=True)
        (folder / "result.json").write_text(json.dumps(rec))
    return store


@pytest.fixture
def one_anomaly_records() -> list[dict]:
    return [
        make_record(ds, ds, m, seed, {"image_auroc": v})
        for (ds, m), values in VALUES.items()
        for seed, v in zip((0, 42, 100), values, strict=True)
    ]


def test_markdown_matches_golden(one_anomaly_records: list[dict]) -> None:
    protocol = load_protocol("one_anomaly")
    matched = match_records(protocol, one_anomaly_records)
    assert len(matched) == 12
    summary = summarize(protocol, matched, "last")
    text = render_markdown(protocol, summary, matched)
    golden = GOLDEN / "one_anomaly.md"
    assert text == golden.read_text(), "regenerate with tests/bench/golden/README if the change is intended"


def test_summary_values_and_published_join(one_anomaly_records: list[dict]) -> None:
    protocol = load_protocol("one_anomaly")
    summary = summarize(protocol, match_records(protocol, one_anomaly_records), "last")
    row = summary[(summary.dataset == "brainmri") & (summary.method == "bgad")].iloc[0]
    assert row["mean"] == pytest.approx(0.72) and row["std"] == pytest.approx(0.02)
    assert row["published"] == pytest.approx(0.740)  # arXiv Table 3, BGAD-FAS on BrainMRI
    assert row["diff"] == pytest.approx(0.72 - 0.740)
    assert not row["flag"]  # the 95 % interval 0.72 ± 0.05 includes 0.740
    nfad = summary[(summary.dataset == "brainmri") & (summary.method == "nfad")].iloc[0]
    assert np.isnan(nfad["published"])  # Table 3 has no NFAD column: missing, not zero


def test_flag_when_the_interval_excludes_the_published_value() -> None:
    protocol = load_protocol("one_anomaly")
    records = [
        make_record("brainmri", "brainmri", "bgad", s, {"image_auroc": v})
        for s, v in ((0, 0.50), (42, 0.51), (100, 0.52))
    ]
    summary = summarize(protocol, match_records(protocol, records), "last")
    assert summary.iloc[0]["flag"]
    assert "⚑" in render_markdown(protocol, summary, match_records(protocol, records))


def test_missing_cells_show_as_missing(one_anomaly_records: list[dict]) -> None:
    protocol = load_protocol("one_anomaly")
    partial = [
        r
        for r in one_anomaly_records
        if not (r["config"]["dataset"] == "aitex" and r["config"]["method"] == "nfad")
    ]
    matched = match_records(protocol, partial)
    text = render_markdown(protocol, summarize(protocol, matched, "last"), matched)
    aitex_row = next(line for line in text.splitlines() if line.startswith("| aitex"))
    assert aitex_row.endswith("| — |") and "0.000" not in aitex_row


def test_latex_is_well_formed(one_anomaly_records: list[dict]) -> None:
    protocol = load_protocol("one_anomaly")
    summary = summarize(protocol, match_records(protocol, one_anomaly_records), "last")
    tex = render_latex(protocol, summary)
    assert tex.count(r"\begin{tabular}") == tex.count(r"\end{tabular}") == 1
    assert tex.count(r"\toprule") == tex.count(r"\bottomrule") == 1
    for block in tex.split(r"\begin{tabular}")[1:]:
        spec = re.match(r"\{([lcr]+)\}", block).group(1)
        body = block.split(r"\end{tabular}")[0]
        rows = [line for line in body.splitlines() if line.endswith(r"\\")]
        assert rows and all(line.count(" & ") == len(spec) - 1 for line in rows)
    assert "one\\_anomaly" in tex and "one_anomaly" not in tex.replace("one\\_anomaly", "")
    assert (
        latex_escape("a_b & 50% #1 {x} ~ ^ \\")
        == r"a\_b \& 50\% \#1 \{x\} \textasciitilde{} \textasciicircum{} \textbackslash{}"
    )


def test_interval_and_paired_test() -> None:
    mean, std, low, high = interval(np.array([0.7, 0.72, 0.74]))
    assert mean == pytest.approx(0.72) and std == pytest.approx(0.02)
    assert (high - mean) == pytest.approx(4.302652729911275 * 0.02 / np.sqrt(3))  # t(0.975, 2)
    assert np.isnan(interval(np.array([0.7]))[2])
    protocol = load_protocol("one_class")
    records = [
        make_record(
            "mvtec",
            cat,
            m,
            seed,
            {"image_auroc": base + (0.03 if m == "bgad" else 0.0) + 0.001 * seed},
            anomaly_selection="one_class",
            n_known_anomalies=10,
            anomaly_defect_type=t,
        )
        for cat, types in (("carpet", ("color", "cut")), ("metal_nut", ("bent", "flip")))
        for t, base in zip(types, (0.8, 0.85), strict=True)
        for m in ("bgad", "nfad")
        for seed in (0, 1, 2)
    ]
    matched = match_records(protocol, records)
    test = paired_test(matched, "image_auroc", "bgad", "nfad")
    assert test["n"] == 12 and test["median_diff"] == pytest.approx(0.03) and test["p_value"] < 0.01
    summary = summarize(protocol, matched, "last")
    carpet_mean = summary[
        (summary.category == "carpet") & (summary.defect_type == "mean") & (summary.method == "bgad")
    ].iloc[0]
    assert carpet_mean["mean"] == pytest.approx((0.83 + 0.88) / 2 + 0.001)
    assert carpet_mean["published"] == pytest.approx(carpet_mean["published"]) and not np.isnan(
        carpet_mean["published"]
    )


def test_write_report_and_figures_from_a_real_tiny_store(tmp_path: Path) -> None:
    """End to end: two tiny real cells, then every file type the report promises."""
    from typer.testing import CliRunner

    from bgad.bench.cli import app

    tiny = [
        "--set",
        "input_size=64",
        "--set",
        "meta_epochs=2",
        "--set",
        "sub_epochs=1",
        "--set",
        "phase1_epochs=1",
        "-k",
        "2",
    ]
    runner = CliRunner()
    result = runner.invoke(app, ["run", "-c", "widget", "--results", str(tmp_path / "store"), *tiny])
    assert result.exit_code == 0, result.output
    result = runner.invoke(
        app, ["report", "--results", str(tmp_path / "store"), "--out", str(tmp_path / "out")]
    )
    assert result.exit_code == 0, result.output
    figures = sorted(p.name for p in (tmp_path / "out" / "figures").iterdir())
    # Figure names carry the setup (profile, input size, known anomalies, meta-epochs): groups never mix them.
    for stem in ("curves-synthetic-widget", "loglik-synthetic-widget", "maps-synthetic-widget"):
        stem = stem.replace("widget", "widget-quick-64-k2-e2") + ("-bgad" if stem.startswith("maps") else "")
        assert f"{stem}.png" in figures and f"{stem}.pdf" in figures
    table = pd.read_csv(tmp_path / "store" / "table.csv")
    assert sorted(table["method"]) == ["bgad", "nfad"] and set(table["dataset"]) == {"synthetic"}


def test_write_report_skips_protocols_without_results(
    tmp_path: Path, one_anomaly_records: list[dict]
) -> None:
    written = write_report(
        [load_protocol("one_anomaly"), load_protocol("one_class")], one_anomaly_records, tmp_path
    )
    assert sorted(p.name for p in written) == ["one_anomaly.csv", "one_anomaly.md", "one_anomaly.tex"]


def test_report_and_regress_name_an_unreadable_record_and_go_on(tmp_path: Path) -> None:
    import shutil

    from typer.testing import CliRunner

    from bgad.bench.cli import app

    committed = sorted((Path(__file__).resolve().parents[2] / "results" / "cells").glob("brainmri-*"))
    if not committed:
        pytest.skip("no committed results in this checkout")
    store = tmp_path / "store"
    shutil.copytree(committed[0], store / "cells" / committed[0].name)
    broken = store / "cells" / "brainmri-brainmri-nfad-seed9-0000000000000000"
    broken.mkdir()
    (broken / "result.json").write_text('{"status": "comp')
    result = CliRunner().invoke(
        app, ["report", "--results", str(store), "--out", str(tmp_path / "r"), "--no-figures"]
    )
    assert result.exit_code == 0, result.output
    assert "warning" in result.output and broken.name in result.output
    result = CliRunner().invoke(
        app, ["regress", "--results", str(store), "--expectations", str(tmp_path / "none.csv")]
    )
    assert broken.name in result.output and "Traceback" not in result.output


def test_written_tables_show_the_papers_other_methods_and_an_index(
    one_anomaly_records: list[dict], tmp_path: Path
) -> None:
    """Methods of the paper we do not run appear as [published] columns with the paper's ±, never bold;
    two profiles get a table each, each with its own paired test; the index lists every table."""
    from bgad.bench.report import write_index, write_report

    extra = [
        make_record(
            ds, ds, m, s, {"image_auroc": 0.7 + 0.01 * s + (0.02 if m == "bgad" else 0)}, profile="cpu"
        )
        for ds in ("aitex", "headct")
        for m in ("bgad", "nfad")
        for s in (0, 1)
    ]
    protocol = load_protocol("one_anomaly")
    written = write_report([protocol], one_anomaly_records + extra, tmp_path)
    text = (tmp_path / "one_anomaly.md").read_text()
    sections = text.split("\n## ")[1:]
    assert [s.splitlines()[0] for s in sections] == [
        "Profile cpu: image AUROC, last epoch",
        "Profile cpu: image AUROC, best epoch per metric (paper-compatible, chosen on the test set)",
        "Profile quick: image AUROC, last epoch",
        "Profile quick: image AUROC, best epoch per metric (paper-compatible, chosen on the test set)",
    ]
    for section, n_pairs in zip(sections, (4, 4, 6, 6), strict=True):
        header = next(line for line in section.splitlines() if line.startswith("| dataset/category"))
        assert "DRA [6] [published]" in header and "profile" not in header
        assert f"bgad vs nfad over {n_pairs} (dataset, category, seed) pairs" in section  # its own test
    quick_aitex = next(line for line in sections[2].splitlines() if line.startswith("| aitex |"))
    assert "0.692 ± 0.124" in quick_aitex and "**0.692" not in quick_aitex  # DRA's AITEX number, not bold
    assert "0.820 ± 0.010" in quick_aitex and "0.710" not in quick_aitex  # quick seeds only
    index = write_index(tmp_path, written, [protocol], one_anomaly_records + extra).read_text()
    assert "one_anomaly.md" in index and "cpu, quick" in index


def test_table_columns_follow_the_papers_order() -> None:
    """Published methods in the paper's column order, then BGAD where the paper prints it, then NFAD,
    then the reference baselines; a method's grid points in numeric order."""
    from bgad.bench.report import published_columns
    from bgad.bench.report.render import _column_order
    from bgad.bench.report.tables import published_parts

    protocol = load_protocol("one_anomaly")
    records = [
        make_record("brainmri", "brainmri", m, 0, {"image_auroc": 0.8}, "cpu")
        for m in ("padim", "patchcore", "nfad", "bgad", "dra", "devnet")
    ]
    matched = match_records(protocol, records)
    published = published_columns(protocol, set(matched["method"]))
    both = pd.concat([matched, published])
    columns = sorted(set(zip(both["method"], both["column"], strict=True)), key=_column_order(protocol))
    # arXiv Table 3 prints KDAD, DevNet, FLOS, SAOE, MLEP, DRA, then BGAD; our DevNet and DRA runs stand
    # just before the paper's columns of them
    expected = [
        ("arxiv-v1", "kdad"),
        ("", "devnet"),
        ("arxiv-v1", "devnet"),
        ("arxiv-v1", "flos"),
        ("arxiv-v1", "saoe"),
        ("arxiv-v1", "mlep"),
        ("", "dra"),
        ("arxiv-v1", "dra"),
        ("", "bgad"),
        ("", "nfad"),
        ("", "patchcore"),
        ("", "padim"),
    ]
    assert [published_parts(m) for m, _ in columns] == expected
    scale = load_protocol("scale_study")
    labels = ["meta_epochs=16 input_size=128", "meta_epochs=2 input_size=128", "meta_epochs=4 input_size=256"]
    ordered = sorted((("nfad", label) for label in labels), key=_column_order(scale))
    assert [label for _, label in ordered] == [labels[1], labels[2], labels[0]]


def test_records_off_their_profile_are_left_out_and_said_where_they_are(tmp_path: Path) -> None:
    """A longer schedule (--set) and the scale study's grid points are not in Table 3's tables: they
    are shown in the scale study (or the ad-hoc table), and the table and the index say so."""
    from bgad.bench.report import write_index, write_report

    settings = {"anomaly_selection": "multi_class", "n_known_anomalies": 1}
    records = [
        make_record("brainmri", "brainmri", "nfad", s, {"image_auroc": 0.8}, "cpu", meta_epochs=e, **settings)
        for s in (0, 42)
        for e in (4, 8, 10)
    ]
    protocols = [load_protocol("one_anomaly"), load_protocol("scale_study")]
    written = write_report(protocols, records, tmp_path)
    assert sorted(p.name for p in written if p.suffix == ".md") == [
        "adhoc.md",
        "one_anomaly.md",
        "scale_study.md",
    ]
    table3 = (tmp_path / "one_anomaly.md").read_text()
    assert "meta_epochs" not in table3.split("\n## ", 1)[1]  # no column of another schedule
    note = (
        "4 record(s) run off their profile's settings (meta_epochs=8/10) are not in these tables; "
        "they are in adhoc.md (2), scale_study.md (2)."
    )
    assert note in table3
    assert "meta_epochs=8" in (tmp_path / "scale_study.md").read_text()
    assert "meta_epochs=10" in (tmp_path / "adhoc.md").read_text()
    index = write_index(tmp_path, written, protocols, records).read_text()
    assert note in next(line for line in index.splitlines() if line.startswith("| [one_anomaly.md]"))


def test_a_grid_axis_a_method_does_not_have_keeps_its_records() -> None:
    """PaDiM has no schedule (meta_epochs None in its record): it belongs to the scale study's table."""
    protocol = load_protocol("scale_study")
    settings = {"anomaly_selection": "multi_class", "n_known_anomalies": 1}
    records = [
        make_record(
            "brainmri", "brainmri", "padim", 0, {"image_auroc": 0.86}, "cpu", meta_epochs=None, **settings
        ),
        make_record(
            "brainmri", "brainmri", "nfad", 0, {"image_auroc": 0.8}, "cpu", meta_epochs=4, **settings
        ),
        make_record(
            "brainmri", "brainmri", "nfad", 0, {"image_auroc": 0.8}, "cpu", meta_epochs=3, **settings
        ),
    ]
    matched = match_records(protocol, records)
    assert sorted(matched["column"]) == ["input_size=128", "meta_epochs=4 input_size=128"]


def test_a_record_off_its_profile_gets_a_column_of_its_own() -> None:
    """A longer schedule run with --set is labelled with what differs, never averaged with the profile."""
    protocol = load_protocol("one_anomaly")
    on = make_record("brainmri", "brainmri", "nfad", 0, {"image_auroc": 0.8}, "cpu", meta_epochs=4)
    off = make_record("brainmri", "brainmri", "nfad", 42, {"image_auroc": 0.7}, "cpu", meta_epochs=8)
    matched = match_records(protocol, [on, off])
    assert list(matched["column"]) == ["", "meta_epochs=8"]


def test_the_paired_test_never_pools_columns() -> None:
    """Pairs at the profile's schedule and pairs at a longer one get a test each, labelled by column."""
    from bgad.bench.report.render import _paired_test_lines

    protocol = load_protocol("one_anomaly")
    records = [
        make_record(
            ds, ds, m, seed, {"image_auroc": 0.8 + (0.02 if m == "bgad" else 0) + 0.01 * seed}, "cpu", **extra
        )
        for ds in ("brainmri", "headct")
        for m in ("bgad", "nfad")
        for seed in (0, 1)
        for extra in ({"meta_epochs": 4}, {"meta_epochs": 8})
    ]
    lines = [
        line
        for line in _paired_test_lines(
            match_records(protocol, records), "image_auroc", "last", "bgad", "nfad"
        )
        if line
    ]
    assert len(lines) == 2
    assert all("over 4 (dataset, category, seed) pairs" in line for line in lines)
    assert "(meta_epochs=8)" in lines[-1] and "(meta_epochs=8)" not in lines[0]


def flag(record: dict, metric: str, why: str) -> dict:
    """``record`` with ``metric`` flagged in every evaluation, as ``run_cell`` writes it (value NaN)."""
    section = record["metrics"]
    for entry in [*section["per_epoch"], section["last_epoch"]]:
        entry[metric] = float("nan")
        entry["flags"] = {**entry.get("flags", {}), metric: why}
    section["best_per_metric_paper_compatible"][metric] = {
        "value": float("nan"),
        "meta_epoch": 1,
        "flag": why,
    }
    return record


@pytest.mark.filterwarnings("ignore:No artists with labels")  # lineplot is replaced by a probe
def test_flagged_values_show_their_flag_and_stay_out_of_means_and_curves(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """BrainMRI BGAD: seed 42 tied (its 0.10 would pull the mean down); AITEX BGAD: every seed diverged."""
    from bgad.bench import figures

    protocol = load_protocol("one_anomaly")
    values = {"brainmri": (0.70, 0.10, 0.74), "aitex": (0.5, 0.5, 0.5)}
    records = [
        make_record(ds, ds, "bgad", seed, {"image_auroc": v})
        for ds, vs in values.items()
        for seed, v in zip((0, 42, 100), vs, strict=True)
    ]
    flag(records[1], "image_auroc", "tied")
    for rec in records[3:]:
        flag(rec, "image_auroc", "diverged")
    matched = match_records(protocol, records)
    for selection in ("last", "best"):
        summary = summarize(protocol, matched, selection).set_index("dataset")
        assert summary.loc["brainmri", "mean"] == pytest.approx(0.72)  # seeds 0 and 100 only
        assert summary.loc["brainmri", "n_seeds"] == 2 and summary.loc["brainmri", "n_flagged"] == 1
        assert summary.loc["aitex", "n_seeds"] == 0 and summary.loc["aitex", "flagged_as"] == "diverged"
        assert np.isnan(summary.loc["aitex", "mean"])
    summary = summarize(protocol, matched, "last")
    text = render_markdown(protocol, summary, matched)
    brainmri = next(line for line in text.splitlines() if line.startswith("| brainmri"))
    aitex = next(line for line in text.splitlines() if line.startswith("| aitex"))
    assert "0.720 ± 0.028" in brainmri and "[1 seed(s) tied, left out]" in brainmri
    assert "diverged (3 seeds)" in aitex and "0.500" not in aitex
    assert "`tied (—)`" in text  # the note says what the flags mean
    assert "diverged (3 seeds)" in render_latex(protocol, summary)
    # curves: the tied and diverged epochs are no points (the diverged cells draw nothing at all)
    assert figures.metric_curves(records[3:], "t", tmp_path / "curves") == []
    drawn = []
    monkeypatch.setattr(figures.sns, "lineplot", lambda data, **kw: drawn.append(data))
    assert figures.metric_curves(records[:3], "t", tmp_path / "curves")
    assert sorted(set(drawn[0]["seed"])) == [0, 100] and drawn[0]["value"].max() == pytest.approx(0.74)


@pytest.mark.parametrize("kind", ["a file", "read-only"])
def test_a_reports_folder_that_cannot_be_written_is_one_clear_error(
    tmp_path: Path, one_anomaly_records: list[dict], monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    import errno
    import tempfile

    from typer.testing import CliRunner

    from bgad.bench.cli import app

    write_store(tmp_path / "store", one_anomaly_records)
    out = tmp_path / "reports"
    if kind == "a file":
        out.write_text("a file where the reports folder should be")
    else:  # chmod does not stop root: refuse every file written into the folder instead
        out.mkdir()
        real = tempfile.mkstemp

        def refuse(*args, dir=None, **kwargs):
            if dir is not None and Path(dir) == out:
                raise OSError(errno.EROFS, "Read-only file system")
            return real(*args, dir=dir, **kwargs)

        monkeypatch.setattr(tempfile, "mkstemp", refuse)
    args = ["report", "--results", str(tmp_path / "store"), "--out", str(out), "--no-figures"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())  # the console wraps long lines
    assert f"cannot write {out}" in text and "--out DIR" in text
    assert "Traceback" not in result.output and "Errno" not in result.output


@pytest.mark.parametrize("command", ["report", "regress"])
@pytest.mark.parametrize("kind", ["missing", "file", "cell folder", "cells folder", "other folder"])
def test_a_results_option_that_is_no_store_is_one_clear_error(
    tmp_path: Path, one_anomaly_records: list[dict], command: str, kind: str
) -> None:
    from typer.testing import CliRunner

    from bgad.bench.cli import app

    store = write_store(tmp_path / "store", one_anomaly_records[:1])
    (tmp_path / "file").write_text("not a store")
    (tmp_path / "other").mkdir()
    where, says = {
        "missing": (tmp_path / "nowhere", "does not exist"),
        "file": (tmp_path / "file", "is a file"),
        "cell folder": (
            store.cell_dir(one_anomaly_records[0]["cell_id"]),
            f"the store holding it: {store.root}",
        ),
        "cells folder": (store.cells_dir, f"the store: {store.root}"),
        "other folder": (tmp_path / "other", "has no cells/ folder"),
    }[kind]
    extra = ["--out", str(tmp_path / "r"), "--no-figures"] if command == "report" else []
    result = CliRunner().invoke(app, [command, "--results", str(where), *extra])
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())  # the console wraps long lines
    assert says in text and "--results DIR" in text
    assert "Traceback" not in result.output


def test_a_record_differing_only_in_a_run_setting_joins_its_profiles_column() -> None:
    """Run settings (here ``shared_positions``, which changes no number) never give a column of their
    own: the report's identity settings are the plan's axes and the run-settings model, not a list."""
    protocol = load_protocol("one_anomaly")
    on = make_record("brainmri", "brainmri", "nfad", 0, {"image_auroc": 0.8}, "cpu", meta_epochs=4)
    off = make_record(
        "brainmri", "brainmri", "nfad", 42, {"image_auroc": 0.7}, "cpu", meta_epochs=4, shared_positions=False
    )
    matched = match_records(protocol, [on, off])
    assert list(matched["column"]) == ["", ""] and list(matched["off_profile"]) == ["", ""]


def test_table_7_subsets_are_the_protocols_not_an_off_profile_column() -> None:
    """A hard-subset record's test types (carpet's hard type, Table 7) are what its protocol gives: no
    column label; the same types set by hand in an ad-hoc run are a setting of their own."""
    from bgad.bench.protocols import adhoc_protocol

    record = make_record(
        "mvtec", "carpet", "bgad", 0, {"image_auroc": 0.9}, "cpu", n_known_anomalies=10, test_types="thread"
    )
    assert list(match_records(load_protocol("hard_subset"), [record])["column"]) == [""]
    (label,) = match_records(adhoc_protocol("mvtec"), [record])["off_profile"]
    assert "test_types=thread" in label.split()


def test_method_names_come_from_the_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """The published name of BGAD†, the paired tests (BGAD vs NFAD, BGAD vs each supervised competitor)
    and the competitors are the registry's entries."""
    from bgad.bench.method_registry import METHODS
    from bgad.bench.report import tables

    assert tables.PAPER_METHOD_NAMES == {"bgad_cc": METHODS.get("bgad_cc").published_as}
    supervised = {name for name in METHODS.names() if METHODS.get(name).supervised}
    assert tables.SUPERVISED_METHODS == supervised == {"devnet", "dra"}
    assert tables.PAIRED_METHODS == [
        ("bgad", METHODS.get("bgad").paired_with),
        ("bgad", "devnet"),
        ("bgad", "dra"),
    ]
    assert tables.PAIRED_METHODS[0] == ("bgad", "nfad")


# image AUROC per method: fixed, hand-chosen (not measurements); the i-th seed adds 0.01 i, and 10 known
# anomalies add 0.05
SUPERVISED_VALUES = {"bgad": 0.80, "devnet": 0.75, "dra": 0.78, "nfad": 0.77}


def _dra_records(pairs: list[tuple[str, str, str]]) -> list[dict]:
    """Three seeds of every method at 10 and at 1 known anomalies, per (dataset, category, type)."""
    return [
        make_record(
            ds,
            cat,
            m,
            seed,
            {"image_auroc": v + 0.01 * i + (0.05 if k == 10 else 0.0)},
            "cpu",
            n_known_anomalies=k,
            **({"anomaly_selection": "one_class", "anomaly_defect_type": t} if t else {}),
        )
        for ds, cat, t in pairs
        for m, v in SUPERVISED_VALUES.items()
        for k in (10, 1)
        for i, seed in enumerate((0, 42, 100))
    ]


def _section(text: str, title: str = "") -> list[str]:
    """The lines of the first table section (profile cpu, last epoch) of a written report whose title
    ends with ``title`` (a variant's table: "10 known")."""
    sections = text.split("\n## ")[1:]
    return next(s for s in sections if s.splitlines()[0].endswith(title)).splitlines()


def _titles(lines: list[str]) -> list[str]:
    header = next(line for line in lines if line.startswith("| dataset"))
    return [t.strip() for t in header.strip("|").split("|")]


def _cells(lines: list[str], row: str) -> list[str]:
    return [
        c.strip() for c in next(line for line in lines if line.startswith(f"| {row} ")).strip("|").split("|")
    ]


def test_dra_general_table_in_the_dra_layout(tmp_path: Path) -> None:
    """DRA Table 1's layout: rows are datasets (MVTec categories and their mean), a table per column group
    (10 known first, then 1 known), our run of each competitor beside its numbers in the DRA and the AHL
    papers and AHL's own (the best published)."""
    records = _dra_records([("aitex", "aitex", ""), ("mvtec", "carpet", ""), ("mvtec", "bottle", "")])
    write_report([load_protocol("dra_general")], records, tmp_path)
    text = (tmp_path / "dra_general.md").read_text()
    assert text.index("last epoch — 10 known") < text.index("last epoch — 1 known")
    lines = _section(text, "last epoch — 10 known")
    titles = _titles(lines)
    group = titles.index("devnet (measured)")
    assert titles[group : group + 3] == [
        "devnet (measured)",
        "DevNet [published, DRA paper]",
        "DevNet [published, AHL paper]",
    ]
    assert "AHL (DRA) [published, AHL paper]" in titles and "bgad" in titles
    assert "DRA (Ours) [published, DRA paper]" in _titles(_section(text, "last epoch — 1 known"))
    aitex = _cells(lines, "aitex")
    # ours (0.75 + 0.05 + 0.01 i: 0.810 ± 0.010) beside DRA's 0.887 ± 0.013 and AHL's re-run 0.889 ± 0.007
    assert aitex[group : group + 3] == ["0.810 ± 0.010", "0.887 ± 0.013", "0.889 ± 0.007"]
    assert "0.760 ± 0.010" not in aitex  # the 1-known runs are in the other table
    assert "(paper" not in " ".join(aitex)  # the published numbers have their columns
    rows = [line.split("|")[1].strip() for line in lines if line.startswith("| ")][1:]  # not the header
    assert rows[0] == "mvtec/carpet" and rows[15] == "mvtec/mean"  # DRA's order: categories, their mean
    assert rows[16:] == ["aitex", "elpv", "brainmri", "headct"]
    assert _cells(lines, "mvtec/mean")[group : group + 3] == [
        "0.810 ± 0.010",
        "0.945 ± 0.004",
        "0.948 ± 0.005",
    ]


def test_paired_tests_of_bgad_against_each_supervised_competitor(tmp_path: Path) -> None:
    """One test per column (10 and 1 known) of BGAD vs NFAD, vs DevNet and vs DRA; too few pairs said."""
    records = _dra_records([("aitex", "aitex", ""), ("brainmri", "brainmri", "")])
    write_report([load_protocol("dra_general")], records, tmp_path)
    text = (tmp_path / "dra_general.md").read_text()
    for column in ("10 known", "1 known"):
        section = "\n".join(_section(text, f"last epoch — {column}"))
        for b, diff in (("nfad", "+0.0300"), ("devnet", "+0.0500"), ("dra", "+0.0200")):
            line = f"Paired Wilcoxon test, bgad vs {b} over 6 (dataset, category, seed) pairs"
            assert f"{line}: median difference {diff}, p = 0.0312." in section
    one_seed = [r for r in records if r["config"]["seed"] == 0 and r["config"]["dataset"] == "aitex"]
    write_report([load_protocol("dra_general")], one_seed, tmp_path / "one")
    text = (tmp_path / "one" / "dra_general.md").read_text()
    assert (
        "Paired Wilcoxon test, bgad vs dra: 1 (dataset, category, seed) pair(s), too few to test."
        in "\n".join(_section(text, "last epoch — 10 known"))
    )


def test_dra_hard_table_has_a_row_per_seen_type_and_their_mean(tmp_path: Path) -> None:
    """DRA Table 2's layout: a row per seen type and the mean over the types, each beside DRA's and
    AHL's numbers; a type DRA does not use (AITEX crease) is no row of this table."""
    pairs = [("aitex", "aitex", "broken_pick"), ("aitex", "aitex", "nep"), ("aitex", "aitex", "crease")]
    write_report([load_protocol("dra_hard")], _dra_records(pairs), tmp_path)
    lines = _section((tmp_path / "dra_hard.md").read_text(), "last epoch — 10 known")
    header = _titles(lines)
    assert header[:2] == ["dataset/category", "defect type"]
    dra = header.index("dra (measured)")
    assert header[dra + 1 : dra + 3] == ["DRA (Ours) [published, DRA paper]", "DRA [published, AHL paper]"]
    cells = {
        tuple(c.strip() for c in line.strip("|").split("|")[:2]): [
            c.strip() for c in line.strip("|").split("|")
        ]
        for line in lines
        if line.startswith("| aitex")
    }
    assert ("aitex", "crease") not in cells and ("aitex", "broken_end") in cells  # printed, not run: —
    assert cells[("aitex", "broken_end")][dra] == "—"
    assert cells[("aitex", "nep")][dra : dra + 2] == ["0.840 ± 0.010", "0.750 ± 0.038"]
    # the mean over the seen types run (broken_pick, nep), beside DRA's and AHL's means over six types
    assert cells[("aitex", "mean")][dra : dra + 3] == ["0.840 ± 0.010", "0.733 ± 0.009", "0.733 ± 0.011"]
    text = (tmp_path / "dra_hard.md").read_text()
    assert "bgad vs devnet over 6 (dataset, category, defect type, seed) pairs" in text


def test_table_3_shows_measured_devnet_and_dra_beside_the_published(tmp_path: Path) -> None:
    """Table 3 with our DevNet and DRA runs: each a (measured) column before the paper's column of it;
    BGAD keeps its bracketed paper value (the reproduction), the table no other new column."""
    records = [
        make_record(ds, ds, m, seed, {"image_auroc": v + 0.01 * i}, "cpu")
        for ds in ("aitex", "headct")
        for m, v in SUPERVISED_VALUES.items()
        for i, seed in enumerate((0, 42, 100))
    ]
    write_report([load_protocol("one_anomaly")], records, tmp_path)
    lines = _section((tmp_path / "one_anomaly.md").read_text())
    header = [
        t.strip() for t in next(line for line in lines if line.startswith("| dataset")).strip("|").split("|")
    ]
    assert header == [
        "dataset/category",
        "KDAD [5] [published]",
        "devnet (measured)",
        "DevNet [39] [published]",
        "FLOS [40] [published]",
        "SAOE [41] [published]",
        "MLEP [42] [published]",
        "dra (measured)",
        "DRA [6] [published]",
        "bgad",
        "nfad",
    ]
    aitex = [
        c.strip() for c in next(line for line in lines if line.startswith("| aitex")).strip("|").split("|")
    ]
    assert aitex[2:4] == ["0.760 ± 0.010", "0.598 ± 0.070"] and aitex[7:9] == [
        "0.790 ± 0.010",
        "0.692 ± 0.124",
    ]
    assert aitex[9].startswith("**0.810 ± 0.010 (paper 0.826 ± 0.011")
    assert "bgad vs devnet over 6" in "\n".join(lines) and "bgad vs dra over 6" in "\n".join(lines)


def test_published_numbers_join_their_variant() -> None:
    """A printed number belongs to the variant whose settings give its setting (DRA's and AHL's ten- and
    one-example columns), or to its reference's variant (multi_class: slides k=10, arXiv k=5)."""
    from bgad.bench.report.tables import paper_table

    table = paper_table(load_protocol("dra_general"))
    assert set(table["method"]) == {"devnet", "dra", "ahl_dra"}  # the references' `methods`
    by_k = table.groupby("setting")["variant"].agg(set).to_dict()
    assert by_k == {"dra_general k=10": {"10 known"}, "dra_general k=1": {"1 known"}}
    multi = paper_table(load_protocol("multi_class"))
    assert set(multi[multi["source"] == "cvpr2023-slides"]["variant"]) == {"cvpr (k=10, beta=0.01)"}
    assert set(multi[multi["source"] == "arxiv-v1"]["variant"]) == {"arxiv (k=5, beta=0.05)"}


def test_a_record_as_read_back_from_json_is_on_its_profile(tmp_path: Path) -> None:
    """A record's config comes back from result.json with lists where the settings hold tuples (DRA's
    cutmix_area): it is the profile's cell, not an off-profile column (and its label would not split)."""
    from bgad.bench.config import resolve_config

    cell = {"method": "dra", "dataset": "headct", "category": "headct", "n_known_anomalies": 1}
    settings = resolve_config("cpu", layers=[("t", cell)])
    axes = {"dataset", "category", "method", "seed", "profile"}
    given = {k: v for k, v in settings.to_dict().items() if k not in axes}
    record = make_record("headct", "headct", "dra", 0, {"image_auroc": 0.8}, "cpu", **given)
    record = json.loads(json.dumps(record, default=list))
    write_report([load_protocol("one_anomaly")], [record], tmp_path)
    text = (tmp_path / "one_anomaly.md").read_text()
    assert "off their profile" not in text and "| headct |" in text
    assert "dra (measured)" in _titles(_section(text))
