"""A cell's progress as plain lines: into the cell's own ``run.log`` and to whoever listens.

Every cell writes ``run.log`` in its folder (phases, one line per meta-epoch with the loss, the
training log-likelihood and, when evaluated, the metrics; warnings), so a finished or failed cell
explains itself. The same lines go to the ``bgad.cell`` logger: the command line prints them when
its output is not a terminal (CI, ``nohup``, Slurm logs, ``| tee``), where progress bars would only
write escape codes into a file; in a terminal it shows bars instead.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

LOGGER = logging.getLogger("bgad.cell")
LOGGER.setLevel(logging.INFO)
LOGGER.propagate = False  # only the handlers below print: no duplicate lines through the root logger
FILE_FORMAT = "%(asctime)s %(levelname)s %(message)s"
CONSOLE_FORMAT = "%(asctime)s %(cell)s | %(message)s"


class CellLog:
    """Progress of one cell: ``phase`` (also shown on a progress bar), ``info``, ``warning``."""

    def __init__(self, label: str, on_phase: Callable[[str], None] | None = None) -> None:
        self.label = label
        self.on_phase = on_phase
        self._log = logging.LoggerAdapter(LOGGER, {"cell": label})

    def phase(self, message: str) -> None:
        self._log.info(message)
        if self.on_phase:
            self.on_phase(message)

    def info(self, message: str) -> None:
        self._log.info(message)

    def warning(self, message: str) -> None:
        self._log.warning(message)


@contextlib.contextmanager
def log_to_file(path: Path, label: str) -> Iterator[None]:
    """Copy this process's cell lines (and Python warnings, once each) into ``path`` while inside."""
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter(FILE_FORMAT))
    LOGGER.addHandler(handler)
    seen: set[str] = set()
    previous = warnings.showwarning

    def record(message, category, filename, lineno, file=None, line=None) -> None:
        text = f"{category.__name__}: {message} ({Path(filename).name}:{lineno})"
        if text not in seen:
            seen.add(text)
            logging.LoggerAdapter(LOGGER, {"cell": label}).warning(text)

    warnings.showwarning = record
    try:
        yield
    finally:
        warnings.showwarning = previous
        LOGGER.removeHandler(handler)
        handler.close()


def print_plain_lines(stream=None) -> logging.Handler:
    """Print every cell line to ``stream`` (stdout by default) with a time stamp and the cell's label."""
    import sys

    handler = logging.StreamHandler(stream or sys.stdout)
    handler.setFormatter(logging.Formatter(CONSOLE_FORMAT, datefmt="%H:%M:%S"))
    LOGGER.addHandler(handler)
    return handler


def tail(path: Path, lines: int = 8) -> list[str]:
    """The last lines of a log (empty when it does not exist)."""
    try:
        return path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:]
    except OSError:
        return []
