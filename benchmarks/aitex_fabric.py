"""AITEX image AUROC split by fabric: how much of a method's pooled AUROC the fabric alone explains.

AITEX's test set mixes seven fabrics (``FF`` of the raw names ``NNNN_DDD_FF``; our converter keeps it as
the second-to-last field of every tile's name) whose shares of anomalies differ widely — one fabric holds
about half of the anomalous tiles, another none. A score that knows nothing but the fabric therefore ranks
anomalies above normals far from chance, and a score that shifts by fabric for any other reason can fall
below chance. The pooled image AUROC of the tables cannot tell these apart; this script can:

* **pooled**: the tables' image AUROC (every test tile together);
* **within fabric**: the mean over fabrics (those with both labels) of the AUROC among that fabric's tiles;
* **fabric spread**: the range of the per-fabric mean normal score, in units of the normal scores' std
  (0: the score does not depend on the fabric);
* **fabric only** (one value per test set): the AUROC of a score that is each tile's fabric's anomaly rate.

It reads the records of the ``one_anomaly`` and ``dra_general`` protocols' AITEX cells from a result store
(their ``scores.csv``; one profile, default ``cpu``) and writes ``reports/aitex_fabric.md``.

    python -m benchmarks.aitex_fabric [--results results] [--out reports/aitex_fabric.md]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from benchmarks.scale_study import mean_std
from bgad.bench.protocols import load_protocol
from bgad.bench.report import match_records
from bgad.bench.store import ResultStore
from bgad.fileio import atomic_write_text

REPO = Path(__file__).resolve().parents[1]
PROTOCOLS = ("one_anomaly", "dra_general")


def fabric_of(path: str) -> str:
    """The fabric code of an AITEX tile: the second-to-last ``_`` field of its file name."""
    return Path(path).stem.split("_")[-2]


def fabric_scores(scores: pd.DataFrame) -> dict[str, float]:
    """Pooled and within-fabric image AUROC, the fabric spread and the fabric-only AUROC of one cell."""
    scores = scores.assign(fabric=scores["path"].map(fabric_of))
    within = [
        roc_auc_score(g["label"], g["score"])
        for _, g in scores.groupby("fabric")
        if g["label"].nunique() == 2
    ]
    normal = scores[scores["label"] == 0]
    means = normal.groupby("fabric")["score"].mean()
    rate = scores.groupby("fabric")["label"].mean()
    return {
        "pooled": roc_auc_score(scores["label"], scores["score"]),
        "within_fabric": float(np.mean(within)),
        "fabric_spread": float((means.max() - means.min()) / normal["score"].std()),
        "fabric_only": roc_auc_score(scores["label"], scores["fabric"].map(rate)),
    }


def fabric_frame(results: Path, profile: str) -> pd.DataFrame:
    """One row per AITEX record of the protocols on ``profile``: method, known anomalies, seed,
    ``fabric_scores``."""
    store = ResultStore(results)
    records = [r for r in store.records() if r["config"]["dataset"] == "aitex"]
    rows, seen = [], set()
    for name in PROTOCOLS:
        for row in match_records(load_protocol(name), records).itertuples():
            if row.cell_id in seen or row.off_profile or row.profile != profile:
                continue
            seen.add(row.cell_id)
            scores = pd.read_csv(store.cell_dir(row.cell_id) / "scores.csv")
            k = row.settings["n_known_anomalies"]
            rows.append({"method": row.method, "known": k, "seed": row.seed, **fabric_scores(scores)})
    return pd.DataFrame(rows)


def table(frame: pd.DataFrame) -> str:
    """Mean (± std over seeds) per method and known-anomaly count."""

    lines = [
        "| known | method | seeds | pooled image AUROC | within-fabric AUROC | fabric spread | fabric only |",
        "|---|---|---|---|---|---|---|",
    ]
    for (known, method), g in frame.groupby(["known", "method"]):
        lines.append(
            f"| {known} | {method} | {len(g)} | {mean_std(g['pooled'])} | {mean_std(g['within_fabric'])} | "
            f"{mean_std(g['fabric_spread'])} | {g['fabric_only'].mean():.3f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--results", type=Path, default=REPO / "results")
    p.add_argument("--out", type=Path, default=REPO / "reports" / "aitex_fabric.md")
    p.add_argument("--profile", default="cpu", help="the profile whose records are read (default: cpu)")
    a = p.parse_args(argv)
    frame = fabric_frame(a.results, a.profile)
    if frame.empty:
        p.error(f"no AITEX records of {', '.join(PROTOCOLS)} on profile {a.profile} in {a.results}")
    text = "\n".join(
        [
            "# AITEX image AUROC by fabric (benchmarks/aitex_fabric.py)",
            "",
            f"Profile {a.profile}, the last epoch of each cell; mean ± std over the seeds run. Pooled: the tables' "
            "image AUROC; within fabric: mean over fabrics of the AUROC among one fabric's tiles; fabric "
            "spread: range of the per-fabric mean normal score / std of the normal scores; fabric only: "
            "the AUROC of a score that is the tile's fabric's anomaly rate. See docs/supervised.md.",
            "",
            table(frame),
            "",
        ]
    )
    a.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(a.out, text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
