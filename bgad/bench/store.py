"""The result store: one folder per finished cell (its ``result.json`` is the record) and a table.

The store owns a cell's identity (``cell_id``) and how a cell folder comes into being: it is written
under a temporary name and renamed into ``cells/<cell id>`` when complete, so readers never see half
a record and two runners writing different cells never collide; a failed cell becomes
``<cell id>.failed`` with its log and traceback. The consolidated table (``table.csv``) is derived:
rebuilt from the records under a file lock and replaced atomically.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
import re
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import pandas as pd
from filelock import FileLock
from pydantic import BaseModel, ConfigDict

from bgad.bench.config import ConfigError, RunConfig
from bgad.data.content import HashCache, content_sha256
from bgad.data.datasets import load_category
from bgad.fileio import atomic_write_text, atomic_write_with, check_writable_folder
from bgad.metrics import METRIC_NAMES

# Bumped whenever a change can move a cell's numbers: part of every cell id, so results of older code
# are never taken as done (the git commit is recorded too, but is not part of the id).
RESULT_VERSION = 1


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class DatasetInfo(_Open):
    name: str
    category: str
    root: str
    kind: str
    has_pixel_masks: bool
    manifest_sha256: str
    content_sha256: str | None = None
    counts: dict[str, int]


class MetricsInfo(_Open):
    last_epoch: dict[str, Any]
    best_per_metric_paper_compatible: dict[str, Any]


class RecordCore(_Open):
    """What every readable record has; the tables and the regression read nothing else for sure."""

    cell_id: str
    status: Literal["complete"]
    config: dict[str, Any]
    metrics: MetricsInfo


class FullMetricsInfo(MetricsInfo):
    variants: dict[str, str]
    per_epoch: list[dict]


class CellRecord(RecordCore):
    """A cell's ``result.json`` as ``run_cell`` writes it (a record may carry more, e.g. ``migrated_from``)."""

    schema_version: int
    metrics: FullMetricsInfo
    config_hash: str
    method: dict[str, Any]
    backbone: dict[str, Any]
    dataset: DatasetInfo
    known_anomalies: dict[str, Any]
    counters: dict[str, Any]
    timing_seconds: dict[str, float]
    device: str
    provenance: dict[str, Any]
    artifacts: dict[str, str]


def write_record(folder: Path, record: dict) -> None:
    """Validate a record against ``CellRecord`` and write it atomically as ``folder/result.json``."""
    CellRecord.model_validate(record)
    atomic_write_text(
        Path(folder) / "result.json", json.dumps(record, indent=1, default=_json_default) + "\n"
    )


def _json_default(obj: object) -> object:
    if hasattr(obj, "item"):  # numpy scalars
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot serialise {type(obj).__name__}")


def cell_id(cfg: RunConfig, data_sha256: str, weights_sha256: str | None = None) -> str:
    """Readable prefix + hash of (resolved config, data content digest, code result version[, weights]).

    ``data_sha256`` is ``bgad.data.content.content_sha256``: the file list with every image's and
    mask's bytes, so changed data is never taken for the data a stored result ran on. A
    ``--backbone-weights`` file is hashed in too (its path is a run setting, its bytes are not: other
    weights are another cell); ``weights_sha256`` is that file's digest when known (planned, or a
    record's), else it is read from the file. Cells without a weights file keep the ids they always had.
    """
    parts = [cfg.result_hash(), data_sha256, str(RESULT_VERSION)]
    if loads_weights_file(cfg):
        parts.append(f"weights:{weights_sha256 or weights_file_sha256(cfg.backbone_weights)}")
    digest = hashlib.sha256("|".join(parts).encode()).hexdigest()[:ID_DIGEST_CHARS]
    return f"{cell_name_prefix(cfg)}-{digest}"


#: Hex digits of the hash at the end of a cell id.
ID_DIGEST_CHARS = 16
#: The longest file name most file systems allow (ext4, xfs, btrfs, NFS, Lustre).
NAME_MAX = 255


def cell_name_prefix(cfg: RunConfig) -> str:
    """The readable start of a cell id: dataset, category, method and seed."""
    return f"{cfg.dataset}-{cfg.category}-{cfg.method}-seed{cfg.seed}"


def name_excess(cell_id: str) -> int:
    """How many characters the longest name the store makes of ``cell_id`` is over ``NAME_MAX``.

    That name is the cell's partial folder, ``.<id>.partial-<host>-<pid>-<8 random characters>``
    (pids have at most 7 digits): a cell whose folders cannot be named must stop before it runs.
    """
    longest = f"{_partial_prefix(cell_id)}{socket.gethostname()}-{'0' * 7}-{'x' * 8}"
    return max(0, len(longest) - NAME_MAX)


def loads_weights_file(cfg: RunConfig) -> bool:
    """Whether the cell loads its backbone from a ``--backbone-weights`` file (random weights read none)."""
    return bool(cfg.backbone_weights) and not cfg.random_weights


@functools.cache
def _weights_digest(path: str, size: int, mtime_ns: int) -> str:
    cache = HashCache()
    digest = cache.digest(Path(path))
    cache.save()
    return digest


def weights_file_sha256(path: str | os.PathLike) -> str:
    """sha256 of a ``--backbone-weights`` file (cached by path, size and mtime), or a ConfigError saying why not."""
    where = Path(path)
    try:
        resolved = where.resolve()
        stat = resolved.stat()
        if resolved.is_dir():
            raise ConfigError(f"--backbone-weights {where} is a folder; give the weights file (.pth) itself")
        return _weights_digest(str(resolved), stat.st_size, stat.st_mtime_ns)
    except FileNotFoundError:
        raise ConfigError(
            f"--backbone-weights {where} does not exist; give the path of a weights file"
        ) from None
    except OSError as exc:
        raise ConfigError(
            f"--backbone-weights {where} cannot be read ({exc.strerror or exc}); make it readable "
            "(chmod a+r) or give another weights file"
        ) from None


def is_complete_folder(folder: Path) -> bool:
    """Whether ``folder`` holds a complete cell record (a readable ``result.json`` with that status)."""
    try:
        return json.loads((folder / "result.json").read_text()).get("status") == "complete"
    except (OSError, json.JSONDecodeError, AttributeError):
        return False


def _partial_prefix(name: str) -> str:
    return f".{name}.partial-"


FAILED_SUFFIX = ".failed"
_BROKEN_SUFFIX = re.compile(r"\.broken-\d{8}-\d{6}$")


def is_store_own_name(name: str) -> bool:
    """Whether ``name`` in ``cells/`` is one the store makes beside the records, not a cell's folder.

    Partial and old copies, leases and write probes start with a dot; a failed cell is ``<id>.failed``
    and a broken record kept aside ``<id>.broken-<time>``. A cell id ends in its hex digest, so an id
    with a dot inside (a category ``part.v2``) is a cell's folder.
    """
    return name.startswith(".") or name.endswith(FAILED_SUFFIX) or _BROKEN_SUFFIX.search(name) is not None


@contextmanager
def cell_folder(cells_dir: Path, name: str, overwrite: bool = False) -> Iterator[Path]:
    """A private folder to write cell ``name`` into; renamed to ``cells_dir/name`` on success.

    On an exception the folder becomes ``name.failed`` (replacing an older one) and the exception
    propagates. A complete folder written meanwhile by another runner is kept (first wins) unless
    ``overwrite``; a broken one (unreadable ``result.json``) is moved aside as ``name.broken-<time>``
    and replaced. Partial folders of this cell left by dead processes are removed first.
    """
    cells_dir.mkdir(parents=True, exist_ok=True)
    final = cells_dir / name
    for stale in cells_dir.glob(_partial_prefix(name) + "*"):
        if not _owner_alive(stale.name.removeprefix(_partial_prefix(name))):
            shutil.rmtree(stale, ignore_errors=True)
    prefix = f"{_partial_prefix(name)}{socket.gethostname()}-{os.getpid()}-"
    work = Path(tempfile.mkdtemp(dir=cells_dir, prefix=prefix))
    work.chmod(0o755)  # mkdtemp makes it private; a shared store must stay readable
    try:
        yield work
    except BaseException:
        failed = cells_dir / f"{name}{FAILED_SUFFIX}"
        shutil.rmtree(failed, ignore_errors=True)
        os.replace(work, failed)
        raise
    if final.exists():
        if is_complete_folder(final) and not overwrite:
            shutil.rmtree(work)
            return
        if is_complete_folder(final):
            old = Path(tempfile.mkdtemp(dir=cells_dir, prefix=f".{name}.old-"))
            os.replace(final, old / "cell")
            shutil.rmtree(old)
        else:  # a broken record loses to a good one, and is kept aside for a look
            os.replace(final, cells_dir / f"{name}.broken-{time.strftime('%Y%m%d-%H%M%S')}")
    os.replace(work, final)
    shutil.rmtree(cells_dir / f"{name}{FAILED_SUFFIX}", ignore_errors=True)  # an earlier failure is history


def _owner_alive(tag: str) -> bool:
    """Whether the process that made ``<host>-<pid>-…`` still runs (unknown hosts count as alive)."""
    parts = tag.split("-")
    if len(parts) < 3 or not parts[-2].isdigit():
        return False  # an older name without an owner: orphaned
    host, pid = "-".join(parts[:-2]), int(parts[-2])
    if host != socket.gethostname():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Lease:
    """A worker's claim on a cell: ``cells/.<id>.lease`` with host and pid, its mtime refreshed.

    Two runs on one store (or two machines on a shared folder) split a grid: each claims a cell
    before it runs it. A lease whose holder died (same host, pid gone) or that was not refreshed for
    ``LEASE_TTL_S`` may be taken over.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(LEASE_TTL_S / 5):
            with contextlib.suppress(OSError):
                os.utime(self.path)

    def release(self) -> None:
        self._stop.set()
        with contextlib.suppress(OSError):
            self.path.unlink()


log = logging.getLogger(__name__)
LEASE_TTL_S = 300.0
_OWNER = f"{socket.gethostname()}-{os.getpid()}"


class ResultStore:
    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        self.cells_dir = self.root / "cells"
        self.bad: dict[str, str] = {}  # folder name -> why its record could not be read

    def cell_dir(self, cell_id: str) -> Path:
        return self.cells_dir / cell_id

    def is_complete(self, cell_id: str) -> bool:
        return is_complete_folder(self.cell_dir(cell_id))

    def record(self, cell_id: str) -> dict:
        return json.loads((self.cell_dir(cell_id) / "result.json").read_text())

    def records(self) -> Iterator[dict]:
        """Every readable complete record; unreadable ones are listed in ``self.bad`` (name → reason)."""
        self.bad = {}
        if not self.cells_dir.is_dir():
            return
        for folder in sorted(self.cells_dir.iterdir()):
            path = folder / "result.json"
            if is_store_own_name(folder.name) or not folder.is_dir():
                continue
            try:
                record = json.loads(path.read_text())
                RecordCore.model_validate(record)
            except (OSError, ValueError, AttributeError) as exc:  # pydantic's errors are ValueErrors
                self.bad[folder.name] = f"{path}: {type(exc).__name__}: {exc}"
                continue
            yield record

    def claim(self, cell_id: str) -> Lease | None:
        """A lease on ``cell_id`` for this process, or None while another live worker holds one."""
        self.cells_dir.mkdir(parents=True, exist_ok=True)
        path = self.cells_dir / f".{cell_id}.lease"
        with FileLock(str(self.root / ".leases.lock")):
            if self.held_elsewhere(cell_id):
                return None
            atomic_write_text(path, _OWNER)
        return Lease(path)

    def held_elsewhere(self, cell_id: str) -> bool:
        """Whether another live worker holds a fresh lease on ``cell_id``."""
        path = self.cells_dir / f".{cell_id}.lease"
        try:
            holder = path.read_text().strip()
            age = time.time() - path.stat().st_mtime
        except OSError:
            return False
        return holder != _OWNER and age < LEASE_TTL_S and _owner_alive(f"{holder}-lease")

    def clean(self, dry_run: bool = False) -> list[Path]:
        """Orphaned partial folders, stale leases, and failures of cells that completed since."""
        found: list[Path] = []
        if not self.cells_dir.is_dir():
            return found
        for entry in sorted(self.cells_dir.iterdir()):
            name = entry.name
            partial = name.startswith(".") and ".partial-" in name
            if partial and not _owner_alive(name.rsplit(".partial-", 1)[1]):
                found.append(entry)
            elif name.endswith(FAILED_SUFFIX) and self.is_complete(name.removesuffix(FAILED_SUFFIX)):
                found.append(entry)
            elif name.endswith(".lease") and time.time() - entry.stat().st_mtime > LEASE_TTL_S:
                found.append(entry)
        if not dry_run:
            for path in found:
                shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
        return found

    def table(self) -> pd.DataFrame:
        """One row per cell: identity, settings that tables group by, last and best metrics."""
        rows = [flatten_record(r) for r in self.records()]
        return pd.DataFrame(rows)

    def rebuild_table(self) -> Path | None:
        """Rewrite ``table.csv`` from the records (atomically, one writer at a time).

        A store that cannot be written (read-only, full) keeps its old table: None, with a warning;
        the records are the truth, the table only a summary of them.
        """
        target = self.root / "table.csv"
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            with FileLock(str(self.root / ".lock")):
                frame = self.table()
                atomic_write_with(target, lambda tmp: frame.to_csv(tmp, index=False))
        except OSError as exc:
            log.warning(
                "%s not rewritten (%s); the records in %s are unchanged",
                target,
                exc.strerror or exc,
                self.cells_dir,
            )
            return None
        return target

    def check_writable(self) -> None:
        """Fail now, naming the folder and the fix, when cells could not be written here."""
        check_writable_folder(self.cells_dir, "give a writable results folder with --results DIR")


def metric_value(rec: dict, name: str, selection: str) -> tuple[float | None, str | None]:
    """A record's value of metric ``name`` at its ``last`` epoch or its ``best`` epoch, and the value's
    flag (``diverged`` or ``tied``, the value then NaN; None for a number and for records older than
    flags, schema version 1)."""
    metrics = rec["metrics"]
    if selection == "last":
        return metrics["last_epoch"].get(name), metrics["last_epoch"].get("flags", {}).get(name)
    best = metrics["best_per_metric_paper_compatible"].get(name, {})
    return best.get("value"), best.get("flag")


def flatten_record(rec: dict) -> dict:
    """One row of the table: identity and settings, then per metric its last and best value, and the
    flag of a flagged one (``<metric>_last_flag``, ``<metric>_best_flag``: empty for a number)."""
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
    for name in METRIC_NAMES:
        for selection in ("last", "best"):
            row[f"{name}_{selection}"], row[f"{name}_{selection}_flag"] = metric_value(rec, name, selection)
    return row


def _content_of(record: dict, cfg: RunConfig) -> str:
    """The content digest of an older record's data, read from the dataset as it is here now.

    Only when its file list is the record's (``manifest_sha256``): other data cannot re-key it.
    """
    root = Path(cfg.data_root) if cfg.data_root else None
    data = load_category(cfg.dataset, cfg.category, root)
    if data.manifest_sha256() != record["dataset"]["manifest_sha256"]:
        raise ValueError(
            f"cannot re-key {record['cell_id']}: the {cfg.dataset}/{cfg.category} files here are not the ones "
            "it ran on (another file list); prepare the same dataset version or leave the record as it is"
        )
    return content_sha256(data)


def migrate_cell_ids(store: ResultStore, expectations: Path | None = None) -> list[tuple[str, str]]:
    """Re-key records whose id the current code computes differently; their metrics stay untouched.

    Why: a cell id hashes the settings that define the cell and its data. When a release narrows
    which settings a method has (e.g. PaDiM no longer carries the flows' schedule), or starts to hash
    the data's bytes (records without ``content_sha256``; needs the dataset here), the same cell gets
    a new id. Each
    such folder is renamed, its record's ``cell_id`` and ``config`` rewritten (the old id is kept
    under ``migrated_from``), and ``expectations`` (a CSV with a ``cell_id`` column) follows.
    Returns (old id, new id) pairs.
    """

    moves: list[tuple[str, str]] = []
    for record in list(store.records()):
        cfg = RunConfig.from_dict(record["config"])
        digest = record["dataset"].get("content_sha256") or _content_of(record, cfg)
        new = cell_id(cfg, digest, record.get("backbone", {}).get("weights", {}).get("sha256"))
        old = record["cell_id"]
        if new == old:
            continue
        record["dataset"]["content_sha256"] = digest
        if store.cell_dir(new).exists():
            raise FileExistsError(f"cannot re-key {old}: {store.cell_dir(new)} exists already")
        record.update(cell_id=new, config=cfg.to_dict(), config_hash=cfg.result_hash())
        record.setdefault("migrated_from", []).append(old)
        atomic_write_text(store.cell_dir(old) / "result.json", json.dumps(record, indent=1) + "\n")
        os.replace(store.cell_dir(old), store.cell_dir(new))
        moves.append((old, new))
    if moves and expectations is not None and expectations.is_file():
        frame = pd.read_csv(expectations)
        frame["cell_id"] = frame["cell_id"].replace(dict(moves))
        atomic_write_with(expectations, lambda tmp: frame.to_csv(tmp, index=False))
    if moves:
        store.rebuild_table()
    return moves
