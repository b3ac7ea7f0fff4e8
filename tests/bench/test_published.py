"""The published numbers (protocols/published/*.csv), their loader, and the MVTec hard/unseen subsets."""

from __future__ import annotations

import math
import re
import tomllib
from decimal import Decimal
from importlib.resources import files

import pandas as pd
import pytest

import bgad.bench.published as pub
from bgad.bench.published import COLUMNS, KEY, METRICS, PublishedDataError, load_published, published_value
from bgad.data.specs import DATASET_SPECS

EXPECTED_FILES = {
    "arxiv_table1.csv": 249,
    "arxiv_table2.csv": 28,
    "arxiv_table3.csv": 28,
    "arxiv_table4.csv": 27,
    "arxiv_table5.csv": 27,
    "arxiv_table6.csv": 18,
    "slides_multiclass.csv": 264,
    "slides_supervised.csv": 68,
    "slides_btad.csv": 28,
    "slides_oneclass.csv": 99,
    "slides_hard_unseen.csv": 27,
    "slides_semi_push_pull.csv": 30,
    "dra_table1.csv": 220,
    "dra_table2.csv": 231,
    "ahl_table1.csv": 70,
    "ahl_table2.csv": 56,
}

# Printed means that are not the mean of the printed per-category (or per-type) rows to ±half a unit of
# the last printed digit. (file, table, row of the mean, column, metric, printed, computed mean rounded to
# 5 decimals.) The test asserts each discrepancy is really there, and that every other mean agrees.
EXPECTED_MEAN_DISCREPANCIES = [
    ("arxiv_table1.csv", "Table 1", "Mean", "DFR [35]", "pixel_auroc", "0.950", 0.94533),
    ("arxiv_table1.csv", "Table 1", "Mean", "PaDiM [2]", "pixel_auroc", "0.975", 0.96973),
    ("arxiv_table1.csv", "Table 1", "Mean", "SPADE [4]", "pro", "0.917", 0.918),
    ("arxiv_table2.csv", "Table 2", "Mean", "AE MSE [38]", "pixel_auroc", "0.780", 0.78667),
    ("arxiv_table2.csv", "Table 2", "Mean", "AE SSIM [14]", "pixel_auroc", "0.790", 0.79333),
    ("slides_btad.csv", "BTAD", "Mean", "AE-MSE", "pixel_auroc", "0.780", 0.78667),
    ("slides_btad.csv", "BTAD", "Mean", "AE-SSIM", "pixel_auroc", "0.790", 0.79333),
    (
        "slides_multiclass.csv",
        "Multi-class setting (unsupervised comparison)",
        "Mean",
        "BGAD (Ours)",
        "pixel_auroc",
        "0.992",
        0.99253,
    ),
    (
        "slides_multiclass.csv",
        "Multi-class setting (unsupervised comparison)",
        "Mean",
        "DRAEM* [52]",
        "pixel_auroc",
        "0.969",
        0.97373,
    ),
    (
        "slides_multiclass.csv",
        "Multi-class setting (unsupervised comparison)",
        "Mean",
        "DRAEM* [52]",
        "pro",
        "0.947",
        0.9498,
    ),
    (
        "slides_supervised.csv",
        "Multi-class setting (supervised comparison)",
        "Mean",
        "BGAD (Ours)",
        "pixel_auroc",
        "0.992",
        0.99253,
    ),
    ("slides_oneclass.csv", "One-class setting", "Carpet / Mean", "DRA", "image_auroc", "0.935", 0.9304),
    ("slides_oneclass.csv", "One-class setting", "Carpet / Mean", "MLEP", "image_auroc", "0.751", 0.7494),
    ("slides_oneclass.csv", "One-class setting", "Metal_nut / Mean", "FLOS", "image_auroc", "0.922", 0.9227),
    (
        "dra_table1.csv",
        "Table 1",
        "MVTec AD",
        "Ten Training Anomaly Examples / SAOE",
        "image_auroc",
        "0.926",
        0.92533,
    ),
]

# Printed gains "(+x%)" that are not (method - baseline) of the same table row:
# (file, row, column, printed gain, computed difference).
EXPECTED_GAIN_DISCREPANCIES = [
    ("slides_hard_unseen.csv", "Image AUROC", "MVTecAD / BGAD", "0.025", 0.024),
]

# Numbers one table reprints from another source: (reprinting file, reprinted file, the reprint's setting ->
# the source's setting, the reprinted methods). The unsupervised KDAD is printed under k=0 in the DRA tables.
REPRINTS = [
    ("ahl_table1.csv", "dra_table1.csv", {}, {"saoe", "mlep", "flos"}),  # AHL sec. 4.1: "taken from [15]"
    ("ahl_table2.csv", "dra_table2.csv", {}, {"saoe", "mlep", "flos"}),
    (
        "slides_oneclass.csv",
        "dra_table2.csv",
        {"one_class k=10": "dra_hard k=10"},
        {"devnet", "flos", "saoe", "mlep", "dra"},
    ),
    (
        "arxiv_table3.csv",
        "dra_table1.csv",
        {"one_anomaly k=1": "dra_general k=1"},
        {"kdad", "devnet", "flos", "saoe", "mlep", "dra"},
    ),
]
# Reprinted cells that differ from their source: (reprinting file, method, category, setting) -> (reprint, source).
EXPECTED_REPRINT_DISCREPANCIES = {
    # AHL Table 2's ten-shot MLEP column holds the DRA paper's DRA values (AHL appendix Table 8 has MLEP's)
    ("ahl_table2.csv", "mlep", "carpet", "dra_hard k=10 type=mean"): ("0.935", "0.751"),
    ("ahl_table2.csv", "mlep", "metal_nut", "dra_hard k=10 type=mean"): ("0.945", "0.878"),
    ("ahl_table2.csv", "mlep", "aitex", "dra_hard k=10 type=mean"): ("0.733", "0.626"),
    ("ahl_table2.csv", "mlep", "elpv", "dra_hard k=10 type=mean"): ("0.766", "0.745"),
    # the slides' copy errors, which are also why their Carpet means disagree with their rows
    ("slides_oneclass.csv", "mlep", "carpet", "one_class k=10 type=color"): ("0.689", "0.698"),
    ("slides_oneclass.csv", "dra", "carpet", "one_class k=10 type=hole"): ("0.922", "0.947"),
    ("slides_oneclass.csv", "flos", "metal_nut", "one_class k=10 type=color"): ("0.9788", "0.978"),
    # arXiv Table 3 prints DevNet's AITEX cell (0.598 ± 0.070) as KDAD's HeadCT
    ("arxiv_table3.csv", "kdad", "headct", "one_anomaly k=1"): ("0.598", "0.793"),
}

# MVTec AD defect-type folder names, from the dataset facts (protocols/datasets.toml).
MVTEC_DEFECT_TYPES = {c: list(t) for c, t in DATASET_SPECS.get("mvtec").defect_types.items()}


@pytest.fixture(scope="module")
def all_rows() -> pd.DataFrame:
    return load_published()


def _decimals(printed: str) -> int:
    return -Decimal(printed).as_tuple().exponent


# ---------------------------------------------------------------- schema


def test_expected_files_and_row_counts():
    assert set(pub.table_files()) == set(EXPECTED_FILES)
    for name, n in EXPECTED_FILES.items():
        assert len(load_published(name)) == n, name


@pytest.mark.parametrize("name", sorted(EXPECTED_FILES))
def test_every_csv_parses_with_the_schema(name):
    header = (files("bgad.protocols") / "published" / name).read_text().splitlines()[0]
    assert header.split(",") == list(COLUMNS)
    df = load_published(name)
    assert df["value"].dtype == float and df["pm"].dtype == float
    assert set(df["metric"]) <= METRICS
    assert df["value"].between(0, 1).all()
    assert df["pm"].dropna().between(0, 1).all()
    # fraction-printed values keep the printed string; %-printed ones (gains) are exact /100 conversions
    frac = df[df["unit_printed"] == "fraction"]
    assert all(float(s) == v for s, v in zip(frac["value_printed"], frac["value"], strict=True))
    assert set(df.loc[df["unit_printed"] == "%", "metric"]) <= {m for m in METRICS if m.endswith("_gain")}
    # categories: real MVTec folder names, BTAD product folders, or the dataset name for one-category sets
    for ds, cat in zip(df["dataset"], df["category"], strict=True):
        if ds == "mvtec":
            assert cat in MVTEC_DEFECT_TYPES or cat == "mean", cat
        elif ds == "btad":
            assert cat in {"01", "02", "03", "mean"}, cat
        else:
            assert cat == ds


def test_no_duplicate_keys_and_values_are_fractions(all_rows):
    assert not all_rows.duplicated(list(KEY)).any()
    assert all_rows["value"].between(0, 1).all()
    assert set(all_rows["source"]) == {"arxiv-v1", "cvpr2023-slides", "dra-cvpr2022", "ahl-cvpr2024"}


def test_load_by_printed_table_label():
    # "Table 1" is printed by the BGAD arXiv paper, DRA and AHL: the label returns all three
    by_source = load_published("Table 1").groupby("source").size().to_dict()
    assert by_source == {
        "arxiv-v1": EXPECTED_FILES["arxiv_table1.csv"],
        "dra-cvpr2022": EXPECTED_FILES["dra_table1.csv"],
        "ahl-cvpr2024": EXPECTED_FILES["ahl_table1.csv"],
    }
    with pytest.raises(KeyError, match="Table 99"):
        load_published("Table 99")


def _write_bad(tmp_path, monkeypatch, lines):
    folder = tmp_path / "published"
    folder.mkdir()
    (folder / "bad.csv").write_text("\n".join([",".join(COLUMNS), *lines]) + "\n")
    monkeypatch.setattr(pub, "_published_dir", lambda: folder)


def test_bad_value_names_file_and_row(tmp_path, monkeypatch):
    good = "arxiv-v1,Table 1,Carpet,SPADE [4],spade,mvtec,carpet,pro,unsupervised k=0,0.947,fraction,,"
    bad = "arxiv-v1,Table 1,Grid,SPADE [4],spade,mvtec,grid,pro,unsupervised k=0,0.9x7,fraction,,"
    _write_bad(tmp_path, monkeypatch, [good, bad])
    with pytest.raises(PublishedDataError, match=r"bad\.csv line 3 \(row 'Grid'.*not a number"):
        load_published()


@pytest.mark.parametrize(
    ("field_value", "message"),
    [
        ("metric=auroc", "metric 'auroc' is not one of"),
        ("value=98.7", "outside \\[0, 1\\]"),
        ("dataset=mnist", "dataset 'mnist'"),
    ],
)
def test_bad_entries_are_rejected(tmp_path, monkeypatch, field_value, message):
    rec = dict(
        zip(
            COLUMNS,
            "arxiv-v1,Table 1,Carpet,SPADE [4],spade,mvtec,carpet,pro,k=0,0.9,fraction,,".split(","),
            strict=True,
        )
    )
    field, value = field_value.split("=")
    rec[field] = value
    _write_bad(tmp_path, monkeypatch, [",".join(rec[c] for c in COLUMNS)])
    with pytest.raises(PublishedDataError, match=f"bad.csv line 2.*{message}"):
        load_published()


def test_duplicate_key_is_rejected(tmp_path, monkeypatch):
    line = "arxiv-v1,Table 1,Carpet,SPADE [4],spade,mvtec,carpet,pro,unsupervised k=0,0.947,fraction,,"
    _write_bad(tmp_path, monkeypatch, [line, line])
    with pytest.raises(PublishedDataError, match="duplicate key"):
        load_published()


# ---------------------------------------------------------------- printed means


def _mean_checks(all_rows):
    """(file, table, mean row, column, metric, printed, computed) for every printed mean with members."""
    df = all_rows.copy()
    df["group"] = [r.split(" / ")[0] if " / " in r else "" for r in df["row"]]
    # a mean row is labelled "... Mean", or is a dataset's mean category (DRA Table 1 prints it as "MVTec AD")
    df["is_mean"] = (df["row"].str.endswith("Mean") | (df["category"] == "mean")) & (
        df["row"] != "Image-level Mean"
    )
    out = []
    for _, g in df.groupby(["file", "table", "column", "method", "metric", "group", "dataset"]):
        mean = g[g["is_mean"]]
        members = g[~g["is_mean"] & (g["row"] != "Image-level Mean")]
        if len(mean) != 1 or members.empty:
            continue
        m = mean.iloc[0]
        out.append(
            (
                m["file"],
                m["table"],
                m["row"],
                m["column"],
                m["metric"],
                m["value_printed"],
                float(members["value"].mean()),
                len(members),
            )
        )
    return out


def test_printed_means_match_their_rows(all_rows):
    checks = _mean_checks(all_rows)
    assert len(checks) >= 60  # Tables 1, 2 and the slides' multi-class, supervised, BTAD, one-class tables
    expected = {e[:6]: e[6] for e in EXPECTED_MEAN_DISCREPANCIES}
    found = set()
    for file, table, row, column, metric, printed, computed, n in checks:
        key = (file, table, row, column, metric, printed)
        if table == "Table 1" or table.startswith("Multi-class"):
            assert n == 15, key
        tol = 0.5 * 10 ** -_decimals(printed) + 1e-9
        agrees = abs(computed - float(printed)) <= tol
        if key in expected:
            assert not agrees, f"expected discrepancy no longer present: {key}"
            assert computed == pytest.approx(expected[key], abs=5e-6), key
            found.add(key)
        else:
            assert agrees, f"printed mean {printed} != mean of rows {computed:.5f}: {key}"
    assert found == set(expected)


def test_printed_gains_match_the_differences(all_rows):
    gains = all_rows[all_rows["metric"].str.endswith("_gain")]
    assert len(gains) == 18
    expected = {e[:4]: e[4] for e in EXPECTED_GAIN_DISCREPANCIES}
    found = set()
    for g in gains.itertuples():
        base_metric = g.metric.removesuffix("_gain")
        same = all_rows[
            (all_rows["file"] == g.file) & (all_rows["row"] == g.row) & (all_rows["metric"] == base_metric)
        ]
        group = g.column.split(" / ")[0]
        ours = same[same["column"] == g.column]["value"].item()
        others = same[same["column"].str.startswith(group + " / ") & (same["column"] != g.column)]
        diff = round(ours - others["value"].item(), 6)
        key = (g.file, g.row, g.column, g.value_printed)
        if key in expected:
            assert diff == pytest.approx(expected[key]) and diff != pytest.approx(g.value)
            found.add(key)
        else:
            assert diff == pytest.approx(g.value, abs=1e-9), key
    assert found == set(expected)


def test_known_cross_table_discrepancies_are_there():
    # The slides' ablation prints BGAD's MVTec image AUROC as 0.992; the multi-class slide prints 0.993.
    with pytest.raises(ValueError, match="disagree"):
        published_value("bgad", "mvtec", "mean", "image_auroc", "multi_class k=10")
    assert published_value(
        "bgad",
        "mvtec",
        "mean",
        "image_auroc",
        "multi_class k=10",
        table="Multi-class setting (unsupervised comparison)",
    ) == (0.993, 0.0012)
    # arXiv Table 6's full model (5 anomalies + RACP + AFW) vs Table 1's BGAD-FAS.
    t6 = load_published("arxiv_table6")
    full = t6[t6["row"] == "5+RACP+AFW"].set_index("metric")["value"]
    assert (full["image_auroc"], full["pixel_auroc"], full["pro"]) == (0.989, 0.995, 0.979)
    assert published_value("bgad", "mvtec", "mean", "image_auroc", "multi_class k=5") == (0.988, 0.0012)


def _reprint_pairs(all_rows):
    """(reprinting row, source row) for every reprinted cell of REPRINTS."""
    pairs = []
    for reprint_file, source_file, settings, methods in REPRINTS:
        source = all_rows[all_rows["file"] == source_file].set_index(
            ["method", "dataset", "category", "setting"]
        )
        reprint = all_rows[(all_rows["file"] == reprint_file) & all_rows["method"].isin(methods)]
        for r in reprint[reprint["metric"] == "image_auroc"].itertuples():
            setting = r.setting
            for old, new in settings.items():
                setting = setting.replace(old, new)
            if r.method == "kdad":
                setting = re.sub(r"k=\d+", "k=0", setting)
            pairs.append((r, source.loc[(r.method, r.dataset, r.category, setting)]))
    return pairs


def test_reprinted_numbers_match_their_source(all_rows):
    pairs = _reprint_pairs(all_rows)
    assert len(pairs) == 30 + 24 + 55 + 24
    found = set()
    for r, src in pairs:
        key = (r.file, r.method, r.category, r.setting)
        same_pm = math.isnan(r.pm) or r.pm == src["pm"]
        if key in EXPECTED_REPRINT_DISCREPANCIES:
            assert (r.value_printed, src["value_printed"]) == EXPECTED_REPRINT_DISCREPANCIES[key], key
            found.add(key)
        else:
            assert r.value_printed == src["value_printed"] and same_pm, key
    assert found == set(EXPECTED_REPRINT_DISCREPANCIES)


# ---------------------------------------------------------------- lookups

# (method, dataset, category, setting, source, expected). AHL re-ran DevNet and DRA (sec. 4.1), so their
# numbers differ from the DRA paper's and a lookup must choose the source; the last one is the cell the PDF
# text shifts into the next row (DRA Table 2, Metal nut Mean, one example).
DRA_AHL_LOOKUPS = [
    ("ahl_dra", "aitex", "aitex", "dra_general k=10", None, (0.925, 0.013)),
    ("ahl_dra", "mvtec", "metal_nut", "dra_hard k=1 type=mean", None, (0.939, 0.004)),
    ("dra", "aitex", "aitex", "dra_general k=10", "dra-cvpr2022", (0.893, 0.017)),
    ("dra", "aitex", "aitex", "dra_general k=10", "ahl-cvpr2024", (0.892, 0.007)),
    ("dra", "mvtec", "metal_nut", "dra_hard k=1 type=mean", "dra-cvpr2022", (0.932, 0.017)),
]


@pytest.mark.parametrize(("method", "dataset", "category", "setting", "source", "expected"), DRA_AHL_LOOKUPS)
def test_dra_and_ahl_lookups(method, dataset, category, setting, source, expected):
    assert published_value(method, dataset, category, "image_auroc", setting, source=source) == expected


def test_dra_lookup_needs_a_source():
    with pytest.raises(ValueError, match="disagree"):
        published_value("dra", "aitex", "aitex", "image_auroc", "dra_general k=10")


def test_published_value_lookups():
    assert published_value("bgad", "mvtec", "carpet", "pixel_auroc", "multi_class k=10") == (0.996, 0.0002)
    assert published_value("bgad", "btad", "mean", "pro", "multi_class k=5") == (0.804, 0.0163)
    assert published_value("bgad", "elpv", "elpv", "image_auroc", "one_anomaly k=1") == (0.903, 0.003)
    assert published_value("nfad", "mvtec", "carpet", "image_auroc", "one_class k=10 type=mean") == (
        0.998,
        None,
    )
    assert published_value("bgad", "mvtec", "mean", "pro", "multi_class k=5 beta=0.01 tau=0.1") == (
        0.9779,
        None,
    )
    assert published_value("bgad", "mvtec", "mean", "pro", "unseen_subset k=10") == (0.93, None)
    assert published_value("bgad", "mvtec", "carpet", "pro", "no such setting") is None
    with pytest.raises(ValueError, match="unknown metric"):
        published_value("bgad", "mvtec", "carpet", "auroc", "multi_class k=10")


# ---------------------------------------------------------------- hard / unseen subsets (arXiv Table 7)


def _subsets():
    return tomllib.loads((files("bgad.protocols") / "mvtec_defect_subsets.toml").read_text())


def test_defect_subsets_use_real_folder_names():
    data = _subsets()
    assert set(data["categories"]) == set(MVTEC_DEFECT_TYPES)
    for cat, sub in data["categories"].items():
        real = set(MVTEC_DEFECT_TYPES[cat])
        easy, hard = set(sub["easy"]), set(sub["hard"])
        assert easy and hard, cat
        assert easy <= real and hard <= real, (cat, (easy | hard) - real)
        assert easy | hard <= real
        assert len(sub["easy"]) == len(easy) and len(sub["hard"]) == len(hard), cat
        # as printed: every type is listed, and the two lists are disjoint except toothbrush's single type
        assert easy | hard == real, cat
        assert (easy & hard) == ({"defective"} if cat == "toothbrush" else set()), cat


def test_defect_subset_abbreviations_map_to_real_names():
    data = _subsets()
    all_types = {t for types in MVTEC_DEFECT_TYPES.values() for t in types}
    for printed, folder in data["abbreviations"].items():
        assert folder in all_types or folder in MVTEC_DEFECT_TYPES, (printed, folder)
