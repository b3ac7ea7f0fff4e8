"""How ``bgad-bench run`` shows a grid as ``api.run_grid`` runs it: a header, then bars in a terminal
(the grid and the cell in hand) or plain lines otherwise (CI, nohup, Slurm logs, ``| tee``)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from bgad.bench.cell_log import LOGGER, print_plain_lines
from bgad.bench.executors import Outcome
from bgad.bench.planner import Cell
from bgad.bench.runner import ELSEWHERE, PLAIN_PROGRESS_ENV, CellHook, CellTask, GridView
from bgad.bench.store import ResultStore


class ConsoleView(GridView):
    """The header (cells in the grid, already done, to run) and the warnings, on the console."""

    def __init__(self, console: Console, grid: str, executor: str, warn: Callable[[str], None]) -> None:
        self.console, self.grid, self.executor, self._warn = console, grid, executor, warn
        self.done_ids: set[str] = set()  # for a dry run's list of cells
        self.labels: dict[str, str] = {}  # cell id -> label, of the cells to run

    def planned(self, store: ResultStore, todo: list[CellTask], done: list[Cell]) -> None:
        self.done_ids = {c.id for c in done}
        self.labels = {t.cell_id: t.label for t in todo}
        total, where = len(todo) + len(done), store.root.resolve()
        self.console.print(
            f"[bold]{self.grid}[/]: {total} cell(s), {len(done)} already in {where}, {len(todo)} to run"
        )

    def warn(self, message: str) -> None:
        self._warn(message)


class BarsView(ConsoleView):
    """A bar for the grid and one for each cell running in this process (its phase and progress)."""

    @contextlib.contextmanager
    def running(self, todo: list[CellTask]) -> Iterator[CellHook | None]:
        columns = (
            TextColumn("[bold]{task.fields[cell]}"),
            BarColumn(),
            TextColumn("{task.percentage:>3.0f}%"),
            TextColumn("{task.fields[phase]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
        )
        with Progress(*columns, console=self.console) as bar:
            self.bar = bar
            self.overall = bar.add_task(
                "grid", total=max(len(todo), 1), cell="grid", phase=f"{self.executor} executor"
            )
            yield self._cell_bar  # used by in-process executors only

    def _cell_bar(self, task: CellTask) -> tuple[Callable[[str], None], Callable[[float], None]]:
        handle = self.bar.add_task(task.label, total=1.0, cell=task.label, phase="starting")
        return (
            lambda message: self.bar.update(handle, phase=message),
            lambda fraction: self.bar.update(handle, completed=fraction),
        )

    def settled(self, outcome: Outcome) -> None:
        if outcome.ok and outcome.value == ELSEWHERE:
            return
        self.bar.advance(self.overall)
        label = self.labels.get(outcome.key)
        for task in self.bar.tasks:
            if task.id != self.overall and not task.finished and task.fields.get("cell") == label:
                self.bar.update(task.id, completed=1.0, visible=False)


class LinesView(ConsoleView):
    """One plain line per phase and meta-epoch (the ``bgad.cell`` lines) and one per settled cell."""

    @contextlib.contextmanager
    def running(self, todo: list[CellTask]) -> Iterator[CellHook | None]:
        previous = os.environ.get(PLAIN_PROGRESS_ENV)
        os.environ[PLAIN_PROGRESS_ENV] = "1"  # worker processes (joblib) print their lines too
        handler = print_plain_lines(self.console.file)
        self.failed = 0
        try:
            yield None
        finally:
            LOGGER.removeHandler(handler)
            if previous is None:
                os.environ.pop(PLAIN_PROGRESS_ENV, None)
            else:
                os.environ[PLAIN_PROGRESS_ENV] = previous
        self.console.print(f"{len(todo) - self.failed} of {len(todo)} cell(s) ran", highlight=False)

    def settled(self, outcome: Outcome) -> None:
        self.failed += not outcome.ok
        label = self.labels.get(outcome.key, outcome.key)
        if not outcome.ok:
            state = "FAILED"
        else:
            state = "running in another worker" if outcome.value == ELSEWHERE else "done"
        self.console.print(f"cell {state}: {label}", highlight=False)


def make_view(console: Console, grid: str, executor: str, warn: Callable[[str], None]) -> ConsoleView:
    """Bars when the console is a terminal, plain lines otherwise."""
    kind = BarsView if console.is_terminal else LinesView
    return kind(console, grid, executor, warn)
