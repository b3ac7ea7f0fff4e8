"""The ``bgad-bench`` command line (typer)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from bgad.bench.cell_log import tail
from bgad.bench.config import (
    RunConfig,
    describe_settings,
    load_profile_description,
    parse_set_options,
    profile_names,
    resolve_config,
)
from bgad.bench.data_cli import data_app
from bgad.bench.executors import Outcome, error_summary
from bgad.bench.method_registry import METHODS
from bgad.bench.protocols import load_protocol, protocol_names
from bgad.data.datasets import default_root
from bgad.data.images import IMAGE_EXTENSIONS, is_image_file
from bgad.data.specs import DATASET_SPECS
from bgad.errors import UserError

# Imports inside a command are deferred: they load torch, pandas or scikit-learn (the API, the store,
# metrics, reports, backbones, saved models), which `bgad-bench --help` and most commands never need.

if TYPE_CHECKING:
    from bgad.bench.store import ResultStore

app = typer.Typer(help="BGAD benchmark reproduction suite.", no_args_is_help=False, add_completion=False)
app.add_typer(data_app, name="data", help="Download, prepare and verify datasets.")
# Wide enough for the results table also when the output is a file or a CI log.
console = Console(width=None if Console().is_terminal else 140)


def _warn(message: str) -> None:
    console.print(f"[bold yellow]warning:[/] {message}", highlight=False)


def _fail(message: str) -> typer.Exit:
    # Escaped: a message may hold square brackets (`pip install -e '.[mlflow]'`) that rich would eat;
    # soft-wrapped: one error, one line, whatever the console's width.
    console.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True)
    return typer.Exit(code=2)


def _results_option(help_text: str = "Result store folder (one folder per finished cell).") -> object:
    return typer.Option(help=f"{help_text} Default: $BGAD_WORK_DIR/results (~/bgad-bench/results).")


# The options of `run`, one line each below (typer reads the help from these annotations).
ProtocolOpt = Annotated[
    str | None, typer.Option(help="Protocol (a paper table, see `bgad-bench ls`); default: an ad-hoc grid.")
]
MethodsOpt = Annotated[
    list[str],
    typer.Option("--method", "-m", help="Method(s); repeatable. Default: the protocol's, or bgad + nfad."),
]
DatasetsOpt = Annotated[
    list[str],
    typer.Option(
        "--dataset",
        help="Dataset(s) (see `bgad-bench ls`); repeatable, one grid after the other. "
        "Default: the protocol's, or synthetic.",
    ),
]
CategoriesOpt = Annotated[
    list[str], typer.Option("--category", "-c", help="Category(ies); default: all the protocol uses.")
]
SeedsOpt = Annotated[
    list[int], typer.Option("--seed", "-s", help="Seed(s); repeatable. Default: the protocol's, or 0.")
]
DataRootOpt = Annotated[
    Path | None, typer.Option(help="Dataset folder in the MVTec layout (default: the prepared copy).")
]
ProfileOpt = Annotated[
    str | None,
    typer.Option(help="Profile name or TOML file (quick, cpu, paper). Default: the protocol's, or quick."),
]
BackboneOpt = Annotated[str | None, typer.Option(help="Backbone preset (default: the profile's).")]
WeightsOpt = Annotated[Path | None, typer.Option(help="Local weights file for the backbone (no download).")]
RandomOpt = Annotated[
    bool, typer.Option("--random-weights", help="Random backbone weights (timing only; recorded).")
]
KnownOpt = Annotated[int | None, typer.Option("--known-anomalies", "-k", help="Number of known anomalies.")]
SetOpt = Annotated[
    list[str],
    typer.Option("--set", help="Override any setting: NAME=VALUE (repeatable; see `config --describe`)."),
]
ResultsOpt = Annotated[
    Path | None,
    typer.Option(
        help="Result store folder (one folder per cell). Default: $BGAD_WORK_DIR/results (~/bgad-bench/results)."
    ),
]
CacheOpt = Annotated[
    bool,
    typer.Option("--feature-cache/--no-feature-cache", help="Keep backbone features on disk for later runs."),
]
SaveModelOpt = Annotated[
    bool, typer.Option("--save-model", help="Keep each trained model in its cell folder (for `predict`).")
]
ThreadsOpt = Annotated[
    int | None, typer.Option(help="Torch CPU threads per cell (default: fitted to the free cores).")
]
DeviceOpt = Annotated[str | None, typer.Option(help="auto (default), cpu, cuda or cuda:N.")]
DryRunOpt = Annotated[
    bool, typer.Option("--dry-run", help="Print one line per cell (done/to do) and stop; needs no data.")
]
ExecutorOpt = Annotated[str, typer.Option(help="local (in-process), joblib (local parallel) or slurm.")]
WorkersOpt = Annotated[int, typer.Option(help="Parallel workers for --executor joblib.")]
PartitionOpt = Annotated[str | None, typer.Option(help="Slurm partition.")]
TimeOpt = Annotated[int, typer.Option(help="Slurm time limit per cell, minutes.")]
GpusOpt = Annotated[int, typer.Option(help="GPUs per Slurm job.")]
CpusOpt = Annotated[int, typer.Option(help="CPUs per Slurm job.")]
RetriesOpt = Annotated[
    int, typer.Option(help="Retries of a cell that crashed (not of a bad setting or missing data).")
]
TrackOpt = Annotated[
    str | None,
    typer.Option(
        help="Log each newly computed cell to an experiment tracker: mlflow (pip install -e '.[mlflow]'; "
        "store: $MLFLOW_TRACKING_URI, default sqlite:///$BGAD_WORK_DIR/mlflow.db)."
    ),
]


@app.command()
def run(  # one parameter per command-line option
    protocol: ProtocolOpt = None,
    method: MethodsOpt = [],  # noqa: B006
    dataset: DatasetsOpt = [],  # noqa: B006
    category: CategoriesOpt = [],  # noqa: B006
    seed: SeedsOpt = [],  # noqa: B006
    data_root: DataRootOpt = None,
    profile: ProfileOpt = None,
    backbone: BackboneOpt = None,
    backbone_weights: WeightsOpt = None,
    random_weights: RandomOpt = False,
    known_anomalies: KnownOpt = None,
    set_: SetOpt = [],  # noqa: B006
    results: ResultsOpt = None,
    feature_cache: CacheOpt = True,
    save_model: SaveModelOpt = False,
    threads: ThreadsOpt = None,
    device: DeviceOpt = None,
    dry_run: DryRunOpt = False,
    executor: ExecutorOpt = "local",
    workers: WorkersOpt = 2,
    partition: PartitionOpt = None,
    time_min: TimeOpt = 120,
    gpus: GpusOpt = 0,
    cpus: CpusOpt = 1,
    max_retries: RetriesOpt = 1,
    track: TrackOpt = None,
) -> None:
    """Run a protocol's grid (or an ad-hoc one); cells already in the store are skipped, so a rerun resumes.

    With no arguments: BGAD and NFAD on the built-in synthetic dataset, offline Lite0 weights, quick profile.
    """
    _run_command(SimpleNamespace(**locals()))


def _run_command(a: SimpleNamespace) -> None:
    """The work of ``run``: plan, run what is not done through ``api.run_grid`` with a console view,
    print the results (a dry run: the plan)."""
    from bgad.bench import api  # deferred: the API's planner and runner import torch and scikit-learn
    from bgad.bench.cli_views import make_view
    from bgad.bench.store import ResultStore

    results = a.results or api.default_results()
    view = make_view(console, a.protocol or "adhoc", a.executor, _warn)
    with _clear_errors():
        cells = _plan_cells(a)
        options = _executor_options(a, results)
        outcomes = api.run_grid(
            cells,
            results,
            executor=a.executor,
            max_retries=a.max_retries,
            track=a.track,
            dry_run=a.dry_run,
            view=view,
            **options,
        )
    if a.dry_run:
        _print_plan(cells, view.done_ids)
        return
    store = ResultStore(results)
    console.print(results_table([r for r in store.records() if r["cell_id"] in {c.id for c in cells}]))
    console.print(TABLE_NOTES, highlight=False)
    failures = [o for o in outcomes if not o.ok]
    if failures:
        _print_failures(failures, store, a.max_retries)
        raise typer.Exit(code=1)


def _plan_cells(a: SimpleNamespace) -> list:
    """The cells of ``run``'s options: each ``--dataset``'s grid in turn (a repeat adds nothing)."""
    from bgad.bench import api

    if len(a.dataset) > 1 and (a.category or a.data_root):
        raise _fail(
            "--category and --data-root name one dataset's parts; with several --dataset, "
            "run one command per dataset"
        )
    return [
        cell
        for dataset in list(dict.fromkeys(a.dataset)) or [None]
        for cell in api.plan_grid(
            a.protocol,
            dataset=dataset,
            categories=a.category or None,
            methods=a.method or None,
            seeds=a.seed or None,
            profile=a.profile,
            settings=_overrides(a),
            data_root=a.data_root,
            require_data=not a.dry_run,
        )
    ]


def _overrides(a: SimpleNamespace) -> dict[str, object]:
    """The settings the options of ``run`` give (those not given left out), then the ``--set`` ones."""
    options = {
        "feature_cache": a.feature_cache,
        "save_model": a.save_model,
        "threads": max(1, a.cpus) if a.executor == "slurm" and a.threads is None else a.threads,
        "device": a.device,
        "backbone": a.backbone,
        "backbone_weights": str(a.backbone_weights) if a.backbone_weights else None,
        "random_weights": a.random_weights or None,
        "n_known_anomalies": a.known_anomalies,
    }
    return {k: v for k, v in options.items() if v is not None} | parse_set_options(a.set_)


def _executor_options(a: SimpleNamespace, results: Path) -> dict[str, object]:
    """The options of ``run`` that the chosen executor takes (Slurm's files go under the store)."""
    if a.executor == "joblib":
        return {"n_jobs": a.workers}
    if a.executor == "slurm":
        return {
            "folder": results / "slurm",
            "partition": a.partition,
            "time_min": a.time_min,
            "gpus_per_node": a.gpus,
            "cpus_per_task": a.cpus,
        }
    return {}


@contextlib.contextmanager
def _clear_errors() -> Iterator[None]:
    """Errors a user can fix (a setting, the data, a name, the cluster) as one line; exit code 2."""
    try:
        yield
    except UserError as exc:
        raise _fail(str(exc)) from None


def _print_plan(cells: list, done_ids: set[str]) -> None:
    """One line per cell (done/todo, id, label with its grid point), then the grid's size."""
    for cell in cells:
        state = "done" if cell.id in done_ids else "todo"
        console.print(f"{state}  {cell.id}  {cell.label}", highlight=False, soft_wrap=True)
    axes = {
        "method(s)": {c.config.method for c in cells},
        "categor(ies)": {(c.config.dataset, c.config.category) for c in cells},
        "seed(s)": {c.config.seed for c in cells},
        "grid point(s)": {c.grid_label for c in cells},
    }
    sizes = " × ".join(f"{len(v)} {k}" for k, v in axes.items())
    unique = len({c.id for c in cells})
    console.print(f"grid: {sizes} = {len(cells)} cell(s), {unique} distinct", highlight=False)


TABLE_NOTES = (
    "Each metric at the last meta-epoch; in brackets the best meta-epoch for that metric, chosen on the test\n"
    "set as the released code reports it (optimistic). AU-PRO: the MVTec AU-PRO up to FPR 0.3; PRO (released\n"
    "code): the variant computed by BGAD's released code (not comparable with AU-PRO). —: not defined for this\n"
    "cell (no pixel masks, or too few distinct scores). Tables in the paper's layout: `bgad-bench report`."
)


def _print_failures(failures: list[Outcome], store: ResultStore, max_retries: int) -> None:
    """Each failed cell's error, the last lines of its log, and where the whole log and traceback are."""
    word = "retry" if max_retries == 1 else "retries"
    console.print(f"[bold red]{len(failures)} cell(s) failed after {max_retries} {word}:[/]")
    for outcome in failures:
        folder = store.cells_dir / f"{outcome.key}.failed"
        console.print(f"  {outcome.key}: {error_summary(outcome.error)}", highlight=False)
        for line in tail(folder / "run.log"):
            console.print(f"    | {line}", highlight=False)
        if folder.exists():
            console.print(
                f"    log: {folder / 'run.log'}  traceback: {folder / 'error.txt'}", highlight=False
            )


def _fmt(value: float | None, flag: str | None = None) -> str:
    """A metric as printed: its flag's text when flagged (``diverged``, ``tied (—)``), else the number."""
    from bgad.metrics import FLAG_TEXT

    if flag:
        return FLAG_TEXT[flag]
    return "—" if value is None or value != value else f"{value:.3f}"


def results_table(records: list[dict]) -> Table:
    """Each run's metrics at the last epoch, with the best epoch per metric (chosen on the test set) in brackets."""
    from bgad.bench.store import metric_value
    from bgad.metrics import METRIC_LABELS, METRIC_NAMES

    table = Table(title="Results: last epoch (best epoch per metric, paper-compatible)")
    for col in ("dataset/category", "method", "seed", *(METRIC_LABELS[m] for m in METRIC_NAMES), "time"):
        table.add_column(col, justify="left" if col in {"dataset/category", "method"} else "right")
    for rec in records:
        cells = [
            f"{_fmt(*metric_value(rec, name, 'last'))} ({_fmt(*metric_value(rec, name, 'best'))})"
            for name in METRIC_NAMES
        ]
        table.add_row(
            f"{rec['dataset']['name']}/{rec['dataset']['category']}",
            rec["config"]["method"],
            str(rec["config"]["seed"]),
            *cells,
            f"{rec['timing_seconds']['total']:.0f} s",
        )
    return table


@app.command()
def report(
    results: Annotated[Path | None, _results_option("Result store to read.")] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            help="Folder for tables (Markdown, LaTeX, CSV) and figures (PNG, PDF). "
            "Default: $BGAD_WORK_DIR/reports (~/bgad-bench/reports)."
        ),
    ] = None,
    protocol: Annotated[
        list[str],
        typer.Option("--protocol", "-p", help="Protocol(s) to render; default: every one with results."),
    ] = [],  # noqa: B006
    figures: Annotated[bool, typer.Option(help="Also draw the figures.")] = True,
) -> None:
    """Regenerate the paper's tables (and figures) from the result store; never trains or scores."""
    from bgad.bench.api import default_reports, default_results
    from bgad.bench.report import render_reports

    out = out or default_reports()
    with _clear_errors():
        written = render_reports(results or default_results(), out, protocol or None, figures, _warn)
    console.print(f"{len(written)} file(s) in {out.resolve()}")
    for path in written:
        if path.suffix in {".md", ".png"}:
            console.print(f"  {path}", highlight=False)


@app.command()
def regress(
    results: Annotated[Path | None, _results_option("Result store to check.")] = None,
    expectations: Annotated[
        Path | None, typer.Option(help="Expectations file (default: RESULTS/expectations.csv).")
    ] = None,
    rerun: Annotated[
        list[str],
        typer.Option(help="Cell id(s) to re-run from scratch and compare with the committed record."),
    ] = [],  # noqa: B006
    update_expectations: Annotated[
        bool,
        typer.Option("--update-expectations", help="Write the expectations file from the store and stop."),
    ] = False,
) -> None:
    """Exit non-zero on any regression; print every comparison made."""
    from bgad.bench.api import default_results
    from bgad.bench.regress import all_checks, write_expectations
    from bgad.bench.report import open_store, record_problems

    with _clear_errors():
        store = open_store(results or default_results())
    records = list(store.records())
    for problem in record_problems(store, records):
        _warn(problem)
    expectations = expectations or store.root / "expectations.csv"
    if update_expectations:
        with _clear_errors():
            frame = write_expectations(records, expectations)
        cells = frame["cell_id"].nunique() if len(frame) else 0
        console.print(f"wrote {len(frame)} expectation(s) of {cells} cell(s) to {expectations}")
        return
    with _clear_errors():
        checks = all_checks(
            store, records, expectations, rerun, lambda msg: console.print(msg, highlight=False)
        )
    console.print(_checks_table(checks))
    failed = [c for c in checks if c.failed]
    if failed:
        console.print(f"[bold red]{len(failed)} regression(s)[/] out of {len(checks)} comparison(s)")
        raise typer.Exit(code=1)
    console.print(f"[green]no regression[/] in {len(checks)} comparison(s)")


def _checks_table(checks: list) -> Table:
    table = Table(title=f"bgad-bench regress: {len(checks)} comparison(s)")
    for col in ("kind", "what", "ours", "reference", "tolerance", "result"):
        table.add_column(col, justify="right" if col in {"ours", "reference", "tolerance"} else "left")
    for c in checks:
        verdict = ("[red]FAIL[/]" + (f": {c.note}" if c.note else "")) if c.failed else c.note or "ok"
        table.add_row(c.kind, c.what, _fmt(c.ours), _fmt(c.reference), _fmt(c.tolerance), verdict)
    return table


store_app = typer.Typer(help="Look after a result store.", no_args_is_help=True)
app.add_typer(store_app, name="store")


@store_app.command("migrate")
def store_migrate(
    results: Annotated[Path | None, _results_option()] = None,
    expectations: Annotated[
        Path | None,
        typer.Option(help="Expectations CSV whose cell ids follow (default: <results>/expectations.csv)."),
    ] = None,
) -> None:
    """Re-key records whose cell id changed with a new release (metrics untouched)."""
    from bgad.bench.api import default_results
    from bgad.bench.store import ResultStore, migrate_cell_ids

    store = ResultStore(results or default_results())
    moves = migrate_cell_ids(store, expectations or store.root / "expectations.csv")
    for old, new in moves:
        console.print(f"{old} -> {new}", highlight=False)
    console.print(f"{len(moves)} record(s) re-keyed", highlight=False)


@store_app.command("clean")
def store_clean(
    results: Annotated[Path | None, _results_option()] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only list what would be removed.")] = False,
) -> None:
    """Remove orphaned partial folders of killed runs, stale leases, and failures of cells that completed since."""
    from bgad.bench.api import default_results
    from bgad.bench.store import ResultStore

    store = ResultStore(results or default_results())
    list(store.records())  # finds the unreadable ones
    found = store.clean(dry_run=dry_run)
    for path in found:
        console.print(f"{'would remove' if dry_run else 'removed'} {path}", highlight=False)
    console.print(
        f"{len(found)} item(s) {'to remove' if dry_run else 'removed'} in {store.cells_dir}", highlight=False
    )
    for name, why in store.bad.items():
        console.print(f"unreadable record kept for a look: {name} ({why})", highlight=False)


@app.command("ls")
def list_things() -> None:
    """List methods, backbones, datasets (and whether each is prepared here), profiles and protocols."""
    from bgad.backbones import BACKBONES

    table = Table(title="bgad-bench registry")
    for col in ("kind", "name", "description"):
        table.add_column(col)
    for name in METHODS.names():
        spec = METHODS.get(name)
        role = " [reference, not in the paper]" if spec.reference else ""
        role += " [supervised competitor, same known anomalies]" if spec.supervised else ""
        paper = f" — {spec.paper}" if spec.paper else ""
        table.add_row("method", name, escape(spec.description + role + paper))  # "[...]" is no markup
    for name in BACKBONES.names():
        preset = BACKBONES.get(name)
        table.add_row("backbone", name, f"{preset.timm_name}.{preset.weights_tag} ({preset.source})")
    for name in DATASET_SPECS.names():
        spec = DATASET_SPECS.get(name)
        if spec.source in ("archive", "raw"):
            where = default_root(name)
            state = f"prepared in {where}" if (where / "bgad_dataset.json").is_file() else "not prepared here"
        else:
            state = {"generated": "built in", "user": "--data-root DIR"}[spec.source]
        table.add_row("dataset", name, f"{spec.describe()} — {state}")
    for name in profile_names():
        table.add_row("profile", name, load_profile_description(name))
    for name in protocol_names():
        table.add_row("protocol", name, load_protocol(name).description)
    console.print(table)


@app.command("config")
def show_config(
    profile: Annotated[str, typer.Option(help="Profile name or TOML file.")] = "quick",
    method: Annotated[str, typer.Option("--method", "-m", help="Method whose settings to resolve.")] = "bgad",
    set_: Annotated[list[str], typer.Option("--set", help="NAME=VALUE overrides.")] = [],  # noqa: B006
    describe: Annotated[
        bool,
        typer.Option(
            "--describe", help="List every setting: methods, value under --profile, limits, meaning."
        ),
    ] = False,
) -> None:
    """Print the resolved configuration (profile < method defaults < overrides) as JSON."""
    with _clear_errors():
        overrides = parse_set_options(set_)
        if describe:
            console.print(_describe_table(profile, method, overrides))
            return
        cfg: RunConfig = resolve_config(profile, overrides, [("--method", {"method": method})])
    console.print_json(json.dumps(cfg.to_dict()))


def _describe_table(profile: str, method: str, overrides: dict[str, str]) -> Table:
    """Every setting with the value a run would use: the profile's, not the model's bare default.

    A setting of another method shows the value that method gets under the same profile.
    """
    resolved: dict[str, dict] = {}

    def value(name: str, of: str) -> object:
        if of not in resolved:
            resolved[of] = resolve_config(profile, overrides, [("--method", {"method": of})]).to_dict()
        return resolved[of][name]

    table = Table(title=f"settings (--set NAME=VALUE); value: profile {profile}, method {method}")
    for col in ("name", "for", "value", "limits", "meaning"):
        table.add_column(col)
    for row in describe_settings():
        users = row["methods"].split(", ")
        if row["methods"] == "every method" or method in users:
            shown = repr(value(row["name"], method))
        else:
            shown = f"{value(row['name'], users[0])!r} (-m {users[0]})"
        table.add_row(row["name"], row["methods"], shown, row["limits"], row["description"])
    return table


@app.command()
def predict(
    model: Annotated[Path, typer.Option(help="Cell folder of a model saved with `run --save-model`.")],
    images: Annotated[
        list[Path], typer.Argument(help="Image files, or folders searched for images (sub-folders too).")
    ],
    out: Annotated[
        Path, typer.Option(help="Folder for scores.csv and the PNG maps (laid out as the images' folders).")
    ],
    threshold: Annotated[
        str | None,
        typer.Option(
            help="Image-score threshold: a number, or 'auto' (F1-best on the model's own test set)."
        ),
    ] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:N or mps.")] = "cpu",
    backbone_weights: WeightsOpt = None,
) -> None:
    """Score new images with a saved model: anomaly maps (PNG, at each image's size) and image scores (CSV)."""
    from bgad.bench.api import load_model
    from bgad.bench.api import predict as predict_images
    from bgad.bench.saved_model import check_out

    files = _image_inputs(images)
    if threshold not in (None, "auto"):
        try:
            float(threshold)
        except ValueError:
            raise _fail(f"--threshold {threshold!r}: give a number or 'auto'") from None
    with _clear_errors():
        check_out(out)
        trained = load_model(model, device, str(backbone_weights) if backbone_weights else None)
        frame = predict_images(trained, files, out, threshold)
    console.print(f"{len(frame)} image(s) scored → {out / 'scores.csv'}, maps under {out}", highlight=False)


def _image_inputs(paths: list[Path]) -> list[Path]:
    """The image files named, and those in named folders and their sub-folders (hidden entries left out).

    A named path that is missing or not an image stops the command: skipping it silently would leave
    a user believing it was scored.
    """
    kinds = ", ".join(sorted(IMAGE_EXTENSIONS))
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files += sorted(
                p
                for p in path.rglob("*")
                if is_image_file(p)
                and p.is_file()
                and not any(part.startswith(".") for part in p.relative_to(path).parts)
            )
        elif not path.exists():
            raise _fail(f"{path} does not exist: give image files or folders of images")
        elif is_image_file(path):
            files.append(path)
        else:
            raise _fail(f"{path} is not an image file ({kinds}): leave it out")
    if not files:
        raise _fail(f"no image files ({kinds}) in {', '.join(map(str, paths))}")
    return list(dict.fromkeys(files))


def _version(value: bool) -> None:
    if value:
        import bgad

        console.print(f"bgad-bench {bgad.__version__}", highlight=False)
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """BGAD benchmark reproduction suite."""


if __name__ == "__main__":  # pragma: no cover
    app()
