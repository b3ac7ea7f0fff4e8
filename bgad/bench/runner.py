"""Run a planned grid through an executor, skipping finished cells, and keep the store's table fresh."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from bgad.bench.planner import Cell
from bgad.config import RunConfig
from bgad.store import ResultStore


@dataclass(frozen=True)
class CellTask:
    """What a worker (another process or a cluster job) needs to run one cell: plain, picklable data."""

    cell_id: str
    label: str
    config: dict
    results_dir: str


# Per-process hook for in-process executors to show the cell in hand; never crosses a process boundary.
_progress_hook: Callable[[CellTask], tuple[Callable[[str], None], Callable[[float], None]]] | None = None


@contextlib.contextmanager
def cell_progress(
    hook: Callable[[CellTask], tuple[Callable[[str], None], Callable[[float], None]]],
) -> Iterator[None]:
    global _progress_hook
    previous, _progress_hook = _progress_hook, hook
    try:
        yield
    finally:
        _progress_hook = previous


def execute_cell(task: CellTask) -> str:
    """Run one cell into the store (module-level, so executors can pickle it); returns the cell id."""
    from bgad.run import run_cell

    _plain_lines_in_workers()
    store = ResultStore(task.results_dir)
    if store.is_complete(task.cell_id):
        return task.cell_id
    status, progress = _progress_hook(task) if _progress_hook else (None, None)
    folder = run_cell(RunConfig.from_dict(task.config), store.cells_dir, status=status, progress=progress)
    if folder.name != task.cell_id:
        raise RuntimeError(
            f"cell {task.label}: the data changed since planning ({folder.name} != {task.cell_id})"
        )
    return task.cell_id


def _plain_lines_in_workers() -> None:
    """In a worker process (joblib, Slurm) print the cell's lines when the parent prints plain lines."""
    import os

    from bgad.cell_log import LOGGER, print_plain_lines

    wanted = os.environ.get("BGAD_PLAIN_PROGRESS") == "1" or "SLURM_JOB_ID" in os.environ
    if wanted and _progress_hook is None and not LOGGER.handlers:
        print_plain_lines()


def pending_tasks(cells: list[Cell], store: ResultStore) -> tuple[list[CellTask], list[Cell]]:
    """(tasks still to run, cells already complete); duplicates (a cell in two variants) run once."""
    seen: set[str] = set()
    todo: list[CellTask] = []
    done: list[Cell] = []
    for cell in cells:
        if cell.id in seen:
            continue
        seen.add(cell.id)
        if store.is_complete(cell.id):
            done.append(cell)
        else:
            todo.append(CellTask(cell.id, cell.label, cell.config.to_dict(), str(Path(store.root).resolve())))
    return todo, done
