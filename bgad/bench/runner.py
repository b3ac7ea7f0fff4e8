"""Run a planned grid through an executor, skipping finished cells, and keep the store's table fresh."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from bgad.bench.config import RunConfig
from bgad.bench.planner import Cell
from bgad.bench.store import ResultStore


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


# Per-process hook given the folder of each cell this process saw through to a record (experiment
# tracking). Called in the process that runs the grid, after each outcome, so it serves every executor.
_record_hook: Callable[[Path], object] | None = None


@contextlib.contextmanager
def after_each_record(hook: Callable[[Path], object] | None) -> Iterator[None]:
    """Call ``hook(cell folder)`` for each cell that ``run_with_others`` completes (None: no hook)."""
    global _record_hook
    previous, _record_hook = _record_hook, hook
    try:
        yield
    finally:
        _record_hook = previous


#: What ``execute_cell`` returns for a cell another live worker holds a lease on.
ELSEWHERE = "running elsewhere"


def execute_cell(task: CellTask) -> str:
    """Run one cell into the store (module-level, so executors can pickle it); returns the cell id.

    The cell is claimed first (``ResultStore.claim``): when another live worker holds it, nothing
    runs and ``ELSEWHERE`` is returned, so two runs on one store split the grid.
    """
    from bgad.bench.cell import run_cell

    _plain_lines_in_workers()
    store = ResultStore(task.results_dir)
    if store.is_complete(task.cell_id):
        return task.cell_id
    lease = store.claim(task.cell_id)
    if lease is None:
        return ELSEWHERE
    try:
        if store.is_complete(task.cell_id):  # finished by the worker whose lease just ended
            return task.cell_id
        status, progress = _progress_hook(task) if _progress_hook else (None, None)
        folder = run_cell(RunConfig.from_dict(task.config), store.cells_dir, status=status, progress=progress)
    finally:
        lease.release()
    if folder.name != task.cell_id:
        raise RuntimeError(
            f"cell {task.label}: the data changed since planning ({folder.name} != {task.cell_id})"
        )
    return task.cell_id


def run_with_others(runner, todo: list[CellTask], on_done=None, poll_s: float = 5.0) -> list:  # noqa: ANN001
    """Run ``todo``; then wait for the cells other workers were running, taking over a dead one's.

    Returns the outcomes of the cells this process ran or failed (cells finished elsewhere count as
    done and produce no outcome).
    """
    import time

    def settled(outcome) -> None:  # noqa: ANN001
        if on_done is not None:
            on_done(outcome)
        if _record_hook is not None and outcome.ok and outcome.value != ELSEWHERE:
            _record_hook(ResultStore(todo[0].results_dir).cell_dir(outcome.value))

    outcomes = [o for o in runner.run(execute_cell, todo, [t.cell_id for t in todo], on_done=settled)]
    waiting = [t for t, o in zip(todo, outcomes, strict=True) if o.ok and o.value == ELSEWHERE]
    finished = [o for o in outcomes if not (o.ok and o.value == ELSEWHERE)]
    while waiting:
        store = ResultStore(waiting[0].results_dir)
        waiting = [t for t in waiting if not store.is_complete(t.cell_id)]
        free = [t for t in waiting if not store.held_elsewhere(t.cell_id)]
        if free:  # their worker finished without a record or died: run them here
            again = runner.run(execute_cell, free, [t.cell_id for t in free], on_done=settled)
            finished += [o for o in again if not (o.ok and o.value == ELSEWHERE)]
            done_here = {o.key for o in again if not (o.ok and o.value == ELSEWHERE)}
            waiting = [t for t in waiting if t.cell_id not in done_here]
        elif waiting:
            time.sleep(poll_s)
    return finished


def _plain_lines_in_workers() -> None:
    """In a worker process (joblib, Slurm) print the cell's lines when the parent prints plain lines."""
    import os

    from bgad.bench.cell_log import LOGGER, print_plain_lines

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
