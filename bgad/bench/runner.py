"""Run a planned grid through an executor, skipping finished cells, and keep the store's table fresh.

``bgad.bench.api.run_grid`` is the one path that runs cells (the command line and ``run_cell`` go
through it); what a caller sees of the run is a ``GridView``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from bgad.bench.cell_log import LOGGER, print_plain_lines
from bgad.bench.config import RunConfig
from bgad.bench.executors import Executor, Outcome
from bgad.bench.planner import Cell
from bgad.bench.store import ResultStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CellTask:
    """What a worker (another process or a cluster job) needs to run one cell: plain, picklable data."""

    cell_id: str
    label: str
    config: dict
    results_dir: str


#: Given a cell about to run in this process: its status-line and progress-fraction callbacks.
CellHook = Callable[[CellTask], tuple[Callable[[str], None], Callable[[float], None]]]

# Per-process hook for in-process executors to show the cell in hand; never crosses a process boundary.
_progress_hook: CellHook | None = None


@contextlib.contextmanager
def cell_progress(hook: CellHook | None) -> Iterator[None]:
    """Show each cell this process runs through ``hook`` while the block runs (None: show nothing)."""
    global _progress_hook
    previous, _progress_hook = _progress_hook, hook
    try:
        yield
    finally:
        _progress_hook = previous


#: What ``execute_cell`` returns for a cell another live worker holds a lease on.
ELSEWHERE = "running elsewhere"
#: Seconds between two looks at the cells other workers hold.
WAIT_POLL_S = 5.0
#: Set to 1 by a parent that prints plain lines, so its worker processes print theirs too.
PLAIN_PROGRESS_ENV = "BGAD_PLAIN_PROGRESS"


class GridView:
    """What a caller sees of a grid run: this one shows nothing and logs the warnings (the API's).

    The command line's views (``bgad.bench.cli_views``) print a header, then bars in a terminal or
    plain lines otherwise.
    """

    def planned(self, store: ResultStore, todo: list[CellTask], done: list[Cell]) -> None:
        """Before the grid is checked: the cells still to run and those already in ``store``."""

    def warn(self, message: str) -> None:
        """What the check found that only the machine running the cells decides (weights, a GPU)."""
        log.warning(message)

    @contextlib.contextmanager
    def running(self, todo: list[CellTask]) -> Iterator[CellHook | None]:
        """Around the run; yields the hook that shows each cell run in this process (None: none)."""
        yield None

    def settled(self, outcome: Outcome) -> None:
        """After each cell this process ran or failed, or found another worker running (``ELSEWHERE``)."""


def execute_cell(task: CellTask) -> str:
    """Run one cell into the store (module-level, so executors can pickle it); returns the cell id.

    The cell is claimed first (``ResultStore.claim``): when another live worker holds it, nothing
    runs and ``ELSEWHERE`` is returned, so two runs on one store split the grid.
    """
    from bgad.bench.cell import run_cell  # deferred: the cell imports torch (read here, so tests can stub it)

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


def run_with_others(
    runner: Executor, todo: list[CellTask], settled: Callable[[Outcome], None]
) -> list[Outcome]:
    """Run ``todo``; then wait for the cells other workers were running, taking over a dead one's.

    ``settled`` is called after each cell (also one found running elsewhere). Returns the outcomes of
    the cells this process ran or failed (cells finished elsewhere count as done: no outcome).
    """
    outcomes = runner.run(execute_cell, todo, [t.cell_id for t in todo], on_done=settled)
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
            time.sleep(WAIT_POLL_S)
    return finished


def _plain_lines_in_workers() -> None:
    """In a worker process (joblib, Slurm) print the cell's lines when the parent prints plain lines."""
    wanted = os.environ.get(PLAIN_PROGRESS_ENV) == "1" or "SLURM_JOB_ID" in os.environ
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
