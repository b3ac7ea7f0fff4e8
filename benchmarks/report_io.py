"""Where benchmark scripts write: each owns one marked section of ``reports/performance.md`` and one
key of ``reports/performance.json``, replaced atomically, so scripts never overwrite each other."""

from __future__ import annotations

import json
from pathlib import Path

from bgad.fileio import atomic_write_text

REPO = Path(__file__).resolve().parents[1]
REPORT_MD = REPO / "reports" / "performance.md"
REPORT_JSON = REPO / "reports" / "performance.json"


def markers(key: str) -> tuple[str, str]:
    return f"<!-- {key}:start -->", f"<!-- {key}:end -->"


def write_section(path: Path, key: str, section: str) -> None:
    """Replace the text between ``key``'s markers (adding them, or the file, if missing); nothing else."""
    start_marker, end_marker = markers(key)
    block = f"{start_marker}\n{section.rstrip()}\n{end_marker}"
    old = path.read_text() if path.exists() else "# Performance\n"
    start = old.find(start_marker)
    end = old.find(end_marker, start) if start >= 0 else -1
    if start >= 0 and end >= 0:
        new = old[:start] + block + old[end + len(end_marker) :]
    else:
        new = old.rstrip() + "\n\n" + block + "\n"
    atomic_write_text(path, new)


def write_json(path: Path, key: str, payload: dict) -> None:
    """Replace ``key`` of the JSON report (other scripts' keys stay)."""
    data = {}
    if path.exists():
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError:
            data = {}
    data[key] = payload
    text = json.dumps(data, indent=1, default=lambda o: o.item() if hasattr(o, "item") else str(o))
    atomic_write_text(path, text + "\n")
