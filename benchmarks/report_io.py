"""Where benchmark scripts write: each owns one marked section of ``reports/performance.md`` and one
key of ``reports/performance.json``, or one ``###`` subsection of its baselines section, replaced
atomically, so scripts never overwrite each other."""

from __future__ import annotations

import json
import re
from pathlib import Path

from bgad.fileio import atomic_write_text

REPO = Path(__file__).resolve().parents[1]
REPORT_MD = REPO / "reports" / "performance.md"
REPORT_JSON = REPO / "reports" / "performance.json"
# The section the reference-baseline scripts (coreset, anomalib_peer) share, one subsection each.
BASELINES_SECTION = "## Reference baselines: PatchCore and PaDiM vs anomalib"


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


def write_subsection(path: Path, heading: str, text: str) -> None:
    """Replace (or add) the ``heading`` subsection (``### ...``) of the baselines section; nothing else.

    The section ends at the next ``##`` heading or another script's section marker.
    """
    old = path.read_text() if path.exists() else "# Performance\n"
    if BASELINES_SECTION not in old:
        old = old.rstrip("\n") + f"\n\n{BASELINES_SECTION}\n\n"
    head, _, rest = old.partition(BASELINES_SECTION)
    next_section = re.search(r"^(## |<!-- )", rest, flags=re.M)
    body, tail = (rest[: next_section.start()], rest[next_section.start() :]) if next_section else (rest, "")
    pattern = re.compile(rf"^{re.escape(heading)}\n.*?(?=^### |\Z)", flags=re.M | re.S)
    if pattern.search(body):
        body = pattern.sub(lambda _m: text.rstrip("\n") + "\n\n", body)
    else:
        body = body.rstrip("\n") + "\n\n" + text.rstrip("\n") + "\n\n"
    atomic_write_text(path, (head + BASELINES_SECTION + body + tail).rstrip("\n") + "\n")
