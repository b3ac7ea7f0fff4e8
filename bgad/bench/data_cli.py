"""``bgad-bench data ...``: download, prepare and verify the datasets (mounted by bgad/bench/cli.py as ``data``).

* ``download mvtec|btad [--data-root DIR]`` - fetch the archive (resumable, checksum, mirrors) and prepare it;
* ``prepare NAME [--raw DIR] [--archive FILE] [--data-root DIR] [--seed 42]`` - convert a raw copy
  (aitex, elpv, brainmri, headct: ``--raw``; elpv finds the installed ``elpv-dataset`` package without
  it) or an archive (mvtec, btad: ``--archive``);
* ``verify NAME [--data-root DIR]`` - list every problem, exit code 1 when there is any.

The default ``--data-root`` is ``data_dir()/NAME`` (``$BGAD_DATA_DIR`` or ``~/.cache/bgad-bench/data``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from bgad.data.archives import prepare_btad, prepare_mvtec
from bgad.data.datasets import list_dataset_categories, load_category
from bgad.data.download import download_archive
from bgad.data.images import DatasetError
from bgad.data.manifest import DATASET_INFO_FILE
from bgad.data.samples import MIN_TEST_IMAGES
from bgad.data.specs import DATASET_SPECS, dataset_names
from bgad.data.verify import verify_dataset
from bgad.paths import data_dir

__all__ = ["data_app"]

data_app = typer.Typer(help="Download, prepare (convert) and verify datasets.", no_args_is_help=True)
console = Console()
err = Console(stderr=True)

DOWNLOADABLE = dataset_names("archive")
CONVERTIBLE = dataset_names("raw")
ALL = (*DOWNLOADABLE, *CONVERTIBLE)
VERIFIABLE = (*ALL, "folder")


def _root(name: str, root: Path | None) -> Path:
    return (root if root is not None else data_dir() / name).expanduser().resolve()


def _check_name(name: str, allowed: tuple[str, ...]) -> str:
    name = name.lower()
    if name == "folder" and name not in allowed:  # a newcomer's first guess for their own data
        err.print(
            "error: your own folder needs no download or preparation; check it with "
            "`bgad-bench data verify folder --data-root DIR`.",
            markup=False,
        )
        raise typer.Exit(2)
    if name not in allowed:
        err.print(f"[red]error:[/] unknown dataset {name!r}; choose one of: {', '.join(allowed)}.")
        raise typer.Exit(2)
    return name


def _fail(exc: Exception) -> None:
    err.print("error: " + str(exc), soft_wrap=True, markup=False, highlight=False)
    raise typer.Exit(1)


def _summary(root: Path) -> None:
    info_path = root / DATASET_INFO_FILE
    try:
        info = json.loads(info_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return
    conv = info.get("conversion", {})
    console.print(f"prepared {info.get('name')} in {root}", markup=False, highlight=False)
    counts = conv.get("counts")
    if counts:
        console.print("counts: " + json.dumps(counts), markup=False, highlight=False)
    for ex in conv.get("excluded", []):
        console.print(f"left out: {ex['file']} - {ex['reason']}", markup=False, highlight=False)
    for note in conv.get("notes", []):
        console.print(f"note: {note}", markup=False, highlight=False)


@data_app.command()
def download(
    name: Annotated[str, typer.Argument(help="mvtec or btad")],
    root: Annotated[
        Path | None, typer.Option("--data-root", "--root", help="dataset folder (default: data_dir()/NAME)")
    ] = None,
    no_progress: Annotated[bool, typer.Option("--no-progress", help="no progress bar")] = False,
) -> None:
    """Download the archive of NAME (resumable, sha256-checked, mirrors tried in turn) and prepare it."""
    name = _check_name(name, DOWNLOADABLE)
    dest = _root(name, root)
    try:
        archive = download_archive(name, progress=not no_progress)
        (prepare_mvtec if name == "mvtec" else prepare_btad)(archive, dest)
    except DatasetError as exc:
        _fail(exc)
    _summary(dest)


@data_app.command()
def prepare(
    name: Annotated[str, typer.Argument(help=f"one of {', '.join(ALL)}")],
    raw: Annotated[
        Path | None,
        typer.Option(
            "--raw",
            help="raw copy folder (aitex, elpv, brainmri, headct; elpv: default the installed elpv-dataset package)",
        ),
    ] = None,
    archive: Annotated[
        Path | None, typer.Option("--archive", help="downloaded archive (mvtec, btad)")
    ] = None,
    root: Annotated[
        Path | None,
        typer.Option("--data-root", "--root", help="dataset folder to create (default: data_dir()/NAME)"),
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="seed of the 75/25 normal train/test split")] = 42,
    no_checksum: Annotated[
        bool, typer.Option("--no-checksum", help="accept an archive whose sha256 differs")
    ] = False,
) -> None:
    """Prepare NAME in the MVTec layout, with manifest.csv and bgad_dataset.json (atomic, idempotent)."""
    from bgad.data.convert import CONVERTERS  # deferred: the converters import scikit-learn

    name = _check_name(name, ALL)
    dest = _root(name, root)
    try:
        if name in DOWNLOADABLE:
            if archive is None:
                raise DatasetError(
                    f"`prepare {name}` needs --archive FILE (the downloaded {name} archive); or run "
                    f"`bgad-bench data download {name}`."
                    + (
                        " An already extracted copy needs no preparation: pass its folder as --data-root to the "
                        "commands that read it, and check it with `bgad-bench data verify`."
                        if raw is not None
                        else ""
                    )
                )
            if seed != 42:
                console.print(f"note: --seed is ignored for {name} (it has an official split)", markup=False)
            (prepare_mvtec if name == "mvtec" else prepare_btad)(archive, dest, check_sha256=not no_checksum)
        else:
            raw = raw or _packaged_raw_copy(name)
            if archive is not None:
                raise DatasetError(f"{name} is converted from a raw folder (--raw), not an archive.")
            CONVERTERS[name](raw, dest, seed=seed)
    except DatasetError as exc:
        _fail(exc)
    _summary(dest)


def _packaged_raw_copy(name: str) -> Path:
    """The raw copy of an installed package that ships one (ELPV: the authors' ``elpv-dataset``), or an
    error that says how to provide the copy."""
    package = DATASET_SPECS.get(name).raw_package
    found = package.installed_copy() if package else None
    if found is not None:
        console.print(f"raw copy: {found} (installed package {package.pip})", markup=False)
        return found
    hint = f", or `pip install {package.pip}` (its authors' release) and run this again" if package else ""
    raise DatasetError(f"`prepare {name}` needs --raw DIR, the folder of the raw {name} copy{hint}.")


@data_app.command()
def verify(
    name: Annotated[
        str, typer.Argument(help=f"one of {', '.join(VERIFIABLE)} (folder: your own, with --data-root)")
    ],
    root: Annotated[
        Path | None, typer.Option("--data-root", "--root", help="dataset folder (default: data_dir()/NAME)")
    ] = None,
    no_counts: Annotated[
        bool, typer.Option("--no-counts", help="do not compare with the official counts")
    ] = False,
) -> None:
    """Check NAME at --data-root: layout, counts, readable images, binary masks of the right size, manifest."""
    name = _check_name(name, VERIFIABLE)
    if name == "folder" and root is None:
        err.print(
            "error: `verify folder` checks your own folder: give it with --data-root DIR.", markup=False
        )
        raise typer.Exit(2)
    dest = _root(name, root)
    problems = verify_dataset(name, dest, check_counts=not no_counts)
    if problems:
        err.print(f"{len(problems)} problem(s) in {name} at {dest}:", markup=False, highlight=False)
        for p in problems:
            err.print(f"- {p}", soft_wrap=True, markup=False, highlight=False)
        raise typer.Exit(1)
    for warning in small_test_sets(name, dest):
        console.print(f"warning: {warning}", markup=False, highlight=False)
    console.print(f"{name} at {dest}: OK", markup=False, highlight=False)


def small_test_sets(name: str, root: Path) -> list[str]:
    """Categories whose test set is too small for an AUROC to mean much (fewer than 10 of a class)."""
    out = []
    for cat in list_dataset_categories(name, root):
        data = load_category(name, cat, root)
        normal = sum(1 for s in data.test if not s.is_anomalous)
        anomalous = len(data.test) - normal
        if min(normal, anomalous) < MIN_TEST_IMAGES:
            out.append(
                f"{cat}: {normal} normal and {anomalous} anomalous test images; with fewer than "
                f"{MIN_TEST_IMAGES} of either, one image moves an AUROC by 0.1 or more"
            )
    return out
