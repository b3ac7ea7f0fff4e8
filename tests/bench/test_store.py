"""The result store: cell ids, the atomic cell folder, re-keying records after an id change."""

from __future__ import annotations

import json
import shutil
import socket
import stat
from pathlib import Path

import pandas as pd
import pytest

from bgad.bench.config import RunConfig
from bgad.bench.store import ResultStore, cell_folder, cell_id, migrate_cell_ids

REPO = Path(__file__).resolve().parents[2]


def test_every_committed_record_has_the_id_the_code_computes() -> None:
    """Committed results stay valid across releases (or were re-keyed by ``bgad-bench store migrate``)."""
    store = ResultStore(REPO / "results")
    records = list(store.records())
    assert records, f"no committed results under {REPO / 'results'}"
    for record in records:
        cfg = RunConfig.from_dict(record["config"])
        assert cell_id(cfg, record["dataset"]["content_sha256"]) == record["cell_id"]


def _old_padim_record(store: ResultStore) -> str:
    """A record as an older release wrote it: PaDiM's config still carrying the flows' schedule."""
    cfg = RunConfig.of(method="padim", dataset="aitex", category="aitex", input_size=128)
    config = {**cfg.to_dict(), "meta_epochs": 1, "sub_epochs": 1, "lr": 2e-4, "phase1_epochs": 2}
    old_id = "aitex-aitex-padim-seed0-0123456789abcdef"
    folder = store.cell_dir(old_id)
    folder.mkdir(parents=True)
    record = {
        "cell_id": old_id,
        "status": "complete",
        "config": config,
        "config_hash": "old",
        "dataset": {"manifest_sha256": "m" * 64, "content_sha256": "c" * 64},
        "metrics": {"last_epoch": {"image_auroc": 0.8}, "best_per_metric_paper_compatible": {}},
    }
    (folder / "result.json").write_text(json.dumps(record))
    return old_id


def test_migration_rekeys_and_keeps_the_metrics(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = ResultStore(tmp_path)
    old_id = _old_padim_record(store)
    expectations = tmp_path / "expectations.csv"
    pd.DataFrame(
        {"cell_id": [old_id], "profile": ["quick"], "metric": ["image_auroc"], "value": [0.8]}
    ).to_csv(expectations, index=False)
    monkeypatch.setattr(ResultStore, "rebuild_table", lambda self: None)  # minimal records: no table
    moves = migrate_cell_ids(store, expectations)
    assert len(moves) == 1 and moves[0][0] == old_id
    new_id = moves[0][1]
    record = store.record(new_id)
    assert record["cell_id"] == new_id and record["migrated_from"] == [old_id]
    assert record["metrics"]["last_epoch"]["image_auroc"] == 0.8
    assert "lr" not in record["config"]
    assert not store.cell_dir(old_id).exists()
    assert pd.read_csv(expectations)["cell_id"].tolist() == [new_id]
    assert migrate_cell_ids(store, expectations) == []  # idempotent


def test_cell_folder_renames_on_success_and_keeps_failures_aside(tmp_path: Path) -> None:
    with cell_folder(tmp_path, "cell-a") as work:
        (work / "result.json").write_text("{}")
    assert (tmp_path / "cell-a" / "result.json").exists()
    assert stat.S_IMODE((tmp_path / "cell-a").stat().st_mode) == 0o755
    with pytest.raises(RuntimeError), cell_folder(tmp_path, "cell-b") as work:
        (work / "run.log").write_text("started\n")
        raise RuntimeError("boom")
    assert (tmp_path / "cell-b.failed" / "run.log").exists() and not (tmp_path / "cell-b").exists()
    with cell_folder(tmp_path, "cell-b") as work:  # a later success clears the old failure
        (work / "result.json").write_text("{}")
    assert (tmp_path / "cell-b").exists() and not (tmp_path / "cell-b.failed").exists()
    shutil.rmtree(tmp_path / "cell-a")


def _complete(store: ResultStore, name: str, **extra: object) -> None:
    folder = store.cell_dir(name)
    folder.mkdir(parents=True)
    record = {"cell_id": name, "status": "complete", "metrics": {"last_epoch": {}}, **extra}
    (folder / "result.json").write_text(json.dumps(record))


def test_a_broken_record_is_replaced_and_kept_aside(tmp_path: Path) -> None:
    store = ResultStore(tmp_path)
    store.cell_dir("cell-a").mkdir(parents=True)
    (store.cell_dir("cell-a") / "result.json").write_text('{"status": "compl')  # truncated
    assert not store.is_complete("cell-a")
    assert list(store.records()) == [] and "cell-a" in store.bad and "result.json" in store.bad["cell-a"]
    with cell_folder(store.cells_dir, "cell-a") as work:
        (work / "result.json").write_text(json.dumps({"status": "complete", "metrics": {}}))
    assert store.is_complete("cell-a")  # the good result wins
    assert len(list(store.cells_dir.glob("cell-a.broken-*"))) == 1  # the bad one kept, named so


def test_clean_removes_orphans_and_old_failures_only(tmp_path: Path) -> None:
    store = ResultStore(tmp_path)
    _complete(store, "done")
    (store.cells_dir / "done.failed").mkdir()  # failed once, completed later
    (store.cells_dir / "other.failed").mkdir()  # still failed: kept
    (store.cells_dir / ".done.partial-somehost-1-abc").mkdir()  # another host: may be alive, kept
    dead = store.cells_dir / f".x.partial-{socket.gethostname()}-999999999-abc"
    dead.mkdir()
    legacy = store.cells_dir / ".y.partial-abcdef"  # an older name without owner: orphaned
    legacy.mkdir()
    found = store.clean(dry_run=True)
    assert set(found) == {store.cells_dir / "done.failed", dead, legacy}
    assert all(p.exists() for p in found)
    store.clean()
    assert not any(p.exists() for p in found) and (store.cells_dir / "other.failed").exists()


def test_a_lease_keeps_other_workers_off_a_cell(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import bgad.bench.store as store_module

    store = ResultStore(tmp_path)
    lease = store.claim("cell-a")
    assert lease is not None and not store.held_elsewhere("cell-a")
    monkeypatch.setattr(store_module, "_OWNER", "otherhost-1")  # as seen by another worker
    assert store.held_elsewhere("cell-a") and store.claim("cell-a") is None
    lease.release()
    assert not store.held_elsewhere("cell-a") and store.claim("cell-a") is not None


def test_a_dead_workers_lease_is_taken_over(tmp_path: Path) -> None:
    store = ResultStore(tmp_path)
    store.cells_dir.mkdir(parents=True)
    (store.cells_dir / ".cell-a.lease").write_text(f"{socket.gethostname()}-999999999")  # no such pid
    assert not store.held_elsewhere("cell-a") and store.claim("cell-a") is not None


def test_the_table_is_readable_by_the_group(tmp_path: Path) -> None:
    store = ResultStore(tmp_path)
    path = store.rebuild_table()
    assert stat.S_IMODE(path.stat().st_mode) & 0o044 == 0o044


def test_a_record_whose_category_has_a_dot_is_read_and_not_cleaned(tmp_path: Path) -> None:
    """``-c part.v2``: the record is visible (table, report, resume); only the store's own names are skipped."""
    store = ResultStore(tmp_path)
    dotted = "folder-part.v2-padim-seed0-0123456789abcdef"
    core = {"config": {}, "metrics": {"last_epoch": {}, "best_per_metric_paper_compatible": {}}}
    _complete(store, dotted, **core)
    for own in (f"{dotted}.failed", f"{dotted}.broken-20240101-120000", f".{dotted}.partial-otherhost-1-abc"):
        _complete(store, own, **core)  # a complete record inside: still not one of the store's records
    (store.cells_dir / f".{dotted}.lease").write_text("otherhost-1")
    assert [r["cell_id"] for r in store.records()] == [dotted] and not store.bad
    assert store.cell_dir(dotted) not in store.clean(dry_run=True)


def test_a_dead_partial_folder_of_a_dotted_category_is_cleaned(tmp_path: Path) -> None:
    store = ResultStore(tmp_path)
    store.cells_dir.mkdir(parents=True)
    dead = (
        store.cells_dir
        / f".folder-x.partial-y-nfad-seed0-{'0' * 16}.partial-{socket.gethostname()}-999999999-abc"
    )
    dead.mkdir()
    assert store.clean(dry_run=True) == [dead]


def _weights(path: Path, payload: bytes) -> str:
    path.write_bytes(payload)
    return str(path)


def test_the_weights_files_bytes_are_part_of_the_cell_id(tmp_path: Path) -> None:
    plain = RunConfig.of(method="padim")
    a = plain.with_overrides({"backbone_weights": _weights(tmp_path / "a.pth", b"weights A")})
    b = plain.with_overrides({"backbone_weights": _weights(tmp_path / "b.pth", b"weights B")})
    same_as_a = plain.with_overrides({"backbone_weights": _weights(tmp_path / "copy.pth", b"weights A")})
    ids = {name: cell_id(cfg, "d" * 64) for name, cfg in {"a": a, "b": b, "copy": same_as_a}.items()}
    assert ids["a"] != ids["b"] and ids["a"] == ids["copy"] != cell_id(plain, "d" * 64)
    random = a.with_overrides({"random_weights": True})  # the file is never read: its bytes do not count
    assert cell_id(random, "d" * 64) == cell_id(plain.with_overrides({"random_weights": True}), "d" * 64)


@pytest.mark.parametrize("kind", ["folder", "missing", "unreadable"])
def test_a_weights_file_that_cannot_be_hashed_names_the_option(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    import bgad.data.content as content
    from bgad.bench.config import ConfigError

    path = {"folder": tmp_path, "missing": tmp_path / "nope.pth"}.get(kind, tmp_path / "w.pth")
    if kind == "unreadable":  # tests run as root, where chmod 000 does not stop reading
        _weights(path, b"secret")
        monkeypatch.setattr(
            content, "file_sha256", lambda p: (_ for _ in ()).throw(PermissionError(13, "denied"))
        )
    cfg = RunConfig.of(method="padim", backbone_weights=str(path))
    with pytest.raises(ConfigError, match=f"--backbone-weights {path}.*(folder|does not exist|chmod a\\+r)"):
        cell_id(cfg, "d" * 64)


def test_migration_keys_a_weights_record_by_its_recorded_digest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The file may be gone or changed since: the record says which bytes the cell ran on."""
    store = ResultStore(tmp_path / "store")
    weights = tmp_path / "w.pth"
    cfg = RunConfig.of(method="padim", backbone_weights=_weights(weights, b"weights A"))
    name = cell_id(cfg, "c" * 64)
    _complete(
        store,
        name,
        config=cfg.to_dict(),
        dataset={"manifest_sha256": "m" * 64, "content_sha256": "c" * 64},
        backbone={"weights": {"sha256": "5" * 64}},
        metrics={"last_epoch": {}, "best_per_metric_paper_compatible": {}},
    )
    weights.write_bytes(b"other weights now")
    monkeypatch.setattr(ResultStore, "rebuild_table", lambda self: None)
    moves = migrate_cell_ids(store)
    assert moves == [(name, cell_id(cfg, "c" * 64, "5" * 64))]


def test_the_store_knows_when_a_cell_name_is_too_long(tmp_path: Path) -> None:
    from bgad.bench.store import NAME_MAX, name_excess

    short = "synthetic-weave-padim-seed0-" + "0" * 16
    assert name_excess(short) == 0
    long_id = "folder-" + "p" * 240 + "-padim-seed0-" + "0" * 16
    over = name_excess(long_id)
    assert over > 0
    name = f".{long_id[over:]}.partial-{socket.gethostname()}-{'1' * 7}-{'x' * 8}"
    assert len(name) == NAME_MAX  # shortened by exactly that many characters, the longest name fits
