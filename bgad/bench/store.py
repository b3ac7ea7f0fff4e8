"""The result store: one folder per finished cell (its ``result.json`` is the record) and a table.

Cells are written under a temporary name and renamed into ``cells/<cell id>`` when complete, so
readers never see half a record and two runners writing different cells never collide. The
consolidated table (``table.csv``) is derived: rebuilt from the records under a file lock and
replaced atomically.
"""

from __future__ import annotations

import fcntl
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd

from bgad.metrics import METRIC_NAMES


class ResultStore:
    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        self.cells_dir = self.root / "cells"

    def cell_dir(self, cell_id: str) -> Path:
        return self.cells_dir / cell_id

    def is_complete(self, cell_id: str) -> bool:
        record = self.cell_dir(cell_id) / "result.json"
        if not record.is_file():
            return False
        try:
            return json.loads(record.read_text()).get("status") == "complete"
        except (OSError, json.JSONDecodeError):
            return False

    def record(self, cell_id: str) -> dict:
        return json.loads((self.cell_dir(cell_id) / "result.json").read_text())

    def records(self) -> Iterator[dict]:
        if not self.cells_dir.is_dir():
            return
        for folder in sorted(self.cells_dir.iterdir()):
            path = folder / "result.json"
            if not folder.name.startswith(".") and path.is_file():
                yield json.loads(path.read_text())

    def table(self) -> pd.DataFrame:
        """One row per cell: identity, settings that tables group by, last and best metrics."""
        rows = [flatten_record(r) for r in self.records()]
        return pd.DataFrame(rows)

    @contextmanager
    def _lock(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def rebuild_table(self) -> Path:
        """Rewrite ``table.csv`` from the records (atomically, one writer at a time)."""
        with self._lock():
            frame = self.table()
            target = self.root / "table.csv"
            fd, tmp = tempfile.mkstemp(dir=self.root, suffix=".csv.tmp")
            os.close(fd)
            try:
                frame.to_csv(tmp, index=False)
                os.replace(tmp, target)
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
        return target


def flatten_record(rec: dict) -> dict:
    cfg = rec["config"]
    row = {
        "cell_id": rec["cell_id"],
        "dataset": cfg["dataset"],
        "category": cfg["category"],
        "method": cfg["method"],
        "seed": cfg["seed"],
        "profile": cfg["profile"],
        "backbone": cfg["backbone"],
        "input_size": cfg["input_size"],
        "n_known_anomalies": cfg["n_known_anomalies"],
        "anomaly_selection": cfg["anomaly_selection"],
        "anomaly_defect_type": cfg["anomaly_defect_type"],
        "train_types": cfg.get("train_types"),
        "test_types": cfg.get("test_types"),
        "config_hash": rec["config_hash"],
        "manifest_sha256": rec["dataset"]["manifest_sha256"],
        "git_commit": rec["provenance"]["git"]["commit"],
        "seconds": rec["timing_seconds"]["total"],
    }
    last = rec["metrics"]["last_epoch"]
    best = rec["metrics"]["best_per_metric_paper_compatible"]
    for name in METRIC_NAMES:
        row[f"{name}_last"] = last.get(name)
        row[f"{name}_best"] = best.get(name, {}).get("value")
    return row
