"""The ``bgad-bench`` command line (typer)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from bgad.config import ConfigError, RunConfig, parse_set_options, profile_names, resolve_config

app = typer.Typer(help="BGAD benchmark reproduction suite.", no_args_is_help=False, add_completion=False)
# Wide enough for the results table also when the output is a file or a CI log.
console = Console(width=None if Console().is_terminal else 140)


def _add_data_app() -> None:
    try:
        from bgad.data.cli import data_app
    except ImportError:  # pragma: no cover - the data commands ship with the package
        return
    app.add_typer(data_app, name="data", help="Download, prepare and verify datasets.")


_add_data_app()


def _fail(message: str) -> typer.Exit:
    console.print(f"[bold red]error:[/] {message}")
    return typer.Exit(code=2)


@app.command()
def run(
    method: Annotated[
        list[str], typer.Option("--method", "-m", help="Method(s); repeat the option for several.")
    ] = ["bgad", "nfad"],  # noqa: B006
    dataset: Annotated[str, typer.Option(help="Dataset name (see `bgad-bench ls`).")] = "synthetic",
    category: Annotated[
        list[str], typer.Option("--category", "-c", help="Category(ies); default: all of the dataset.")
    ] = [],  # noqa: B006
    data_root: Annotated[
        Path | None,
        typer.Option(help="Folder of the dataset in the MVTec layout (default: the prepared copy)."),
    ] = None,
    profile: Annotated[str, typer.Option(help="Profile name or TOML file: quick (CPU) or paper.")] = "quick",
    seed: Annotated[list[int], typer.Option("--seed", "-s", help="Seed(s); repeat for several.")] = [0],  # noqa: B006
    backbone: Annotated[str | None, typer.Option(help="Backbone preset (default: the profile's).")] = None,
    backbone_weights: Annotated[
        Path | None, typer.Option(help="Local weights file for the backbone (no download).")
    ] = None,
    random_weights: Annotated[
        bool, typer.Option("--random-weights", help="Random backbone weights (timing only; recorded).")
    ] = False,
    known_anomalies: Annotated[
        int | None, typer.Option("--known-anomalies", "-k", help="Number of known anomalies.")
    ] = None,
    set_: Annotated[
        list[str], typer.Option("--set", help="Override any setting: NAME=VALUE (repeatable).")
    ] = [],  # noqa: B006
    out: Annotated[Path, typer.Option(help="Folder for the run folders.")] = Path("runs"),
    feature_cache: Annotated[
        bool, typer.Option(help="Keep backbone features on disk for later runs.")
    ] = True,
) -> None:
    """Train and evaluate methods on one dataset's categories; print a results table.

    With no arguments: BGAD and NFAD on the built-in synthetic dataset, offline Lite0 weights, quick profile.
    """
    from bgad.data.images import DatasetError
    from bgad.data.registry import list_dataset_categories
    from bgad.method import load_builtin_methods
    from bgad.registry import UnknownNameError
    from bgad.run import run_cell

    try:
        methods = load_builtin_methods()
        specs = {m: methods.get(m) for m in method}
        overrides = parse_set_options(set_)
        explicit = {
            "dataset": dataset,
            "data_root": str(data_root) if data_root else None,
            "feature_cache": feature_cache,
        }
        if backbone:
            explicit["backbone"] = backbone
        if backbone_weights:
            explicit["backbone_weights"] = str(backbone_weights)
        if random_weights:
            explicit["random_weights"] = True
        if known_anomalies is not None:
            explicit["n_known_anomalies"] = known_anomalies
        categories = category or list_dataset_categories(dataset, data_root)
        cells = [
            resolve_config(
                profile, specs[m].defaults, {**explicit, **overrides, "method": m, "category": c, "seed": s}
            )
            for c in categories
            for s in seed
            for m in method
        ]
    except (ConfigError, UnknownNameError, DatasetError) as exc:
        raise _fail(str(exc)) from None

    console.print(f"[bold]{len(cells)} run(s)[/] → {out.resolve()}")
    rows = []
    with Progress(
        TextColumn("[bold]{task.fields[cell]}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TextColumn("{task.fields[phase]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
    ) as bar:
        overall = bar.add_task("all", total=len(cells), cell="all runs", phase="")
        for cfg in cells:
            label = f"{cfg.method} · {cfg.category} · seed {cfg.seed}"
            task = bar.add_task(label, total=1.0, cell=label, phase="starting")
            try:
                folder = run_cell(
                    cfg,
                    out,
                    status=lambda msg, t=task: bar.update(t, phase=msg),
                    progress=lambda frac, t=task: bar.update(t, completed=frac),
                )
            except (ConfigError, UnknownNameError, DatasetError) as exc:
                raise _fail(str(exc)) from None
            except Exception as exc:
                raise _fail(f"{label} failed: {type(exc).__name__}: {exc}") from exc
            bar.update(task, completed=1.0, phase="done", visible=False)
            bar.advance(overall)
            rows.append(json.loads((folder / "result.json").read_text()) | {"_folder": str(folder)})
    console.print(results_table(rows))


def _fmt(value: float | None) -> str:
    return "—" if value is None or value != value else f"{value:.3f}"


def results_table(records: list[dict]) -> Table:
    """Each run's metrics at the last epoch, with the best epoch per metric (chosen on the test set) in brackets."""
    table = Table(title="Results: last epoch (best epoch per metric, paper-compatible)")
    for col in (
        "dataset/category",
        "method",
        "seed",
        "image AUROC",
        "pixel AUROC",
        "AU-PRO",
        "PRO (code)",
        "time",
    ):
        table.add_column(col, justify="left" if col in {"dataset/category", "method"} else "right")
    for rec in records:
        last = rec["metrics"]["last_epoch"]
        best = rec["metrics"]["best_per_metric_paper_compatible"]
        cells = [
            f"{_fmt(last.get(name))} ({_fmt(best.get(name, {}).get('value'))})"
            for name in ("image_auroc", "pixel_auroc", "pro", "pro_paper")
        ]
        table.add_row(
            f"{rec['dataset']['name']}/{rec['dataset']['category']}",
            rec["config"]["method"],
            str(rec["config"]["seed"]),
            *cells,
            f"{rec['timing_seconds']['total']:.0f} s",
        )
    return table


@app.command("ls")
def list_things() -> None:
    """List methods, backbones, datasets and profiles."""
    from bgad.backbones import BACKBONES
    from bgad.data.registry import DATASETS
    from bgad.method import load_builtin_methods

    methods = load_builtin_methods()
    table = Table(title="bgad-bench registry")
    table.add_column("kind")
    table.add_column("name")
    table.add_column("description")
    for name in methods.names():
        table.add_row("method", name, methods.get(name).description)
    for name in BACKBONES.names():
        preset = BACKBONES.get(name)
        table.add_row("backbone", name, f"{preset.timm_name}.{preset.weights_tag} ({preset.source})")
    for name in DATASETS.names():
        table.add_row("dataset", name, "")
    for name in profile_names():
        table.add_row("profile", name, "")
    console.print(table)


@app.command("config")
def show_config(
    profile: Annotated[str, typer.Option(help="Profile name or TOML file.")] = "quick",
    method: Annotated[str, typer.Option("--method", "-m")] = "bgad",
    set_: Annotated[list[str], typer.Option("--set", help="NAME=VALUE overrides.")] = [],  # noqa: B006
) -> None:
    """Print the resolved configuration (profile < method defaults < overrides) as JSON."""
    from bgad.method import load_builtin_methods
    from bgad.registry import UnknownNameError

    try:
        spec = load_builtin_methods().get(method)
        cfg: RunConfig = resolve_config(profile, spec.defaults, {**parse_set_options(set_), "method": method})
    except (ConfigError, UnknownNameError) as exc:
        raise _fail(str(exc)) from None
    console.print_json(json.dumps(cfg.to_dict()))


if __name__ == "__main__":  # pragma: no cover
    app()
