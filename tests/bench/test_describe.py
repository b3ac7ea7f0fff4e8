"""`bgad-bench config --describe`: limits in words and the value the chosen profile gives, not pydantic's."""

from __future__ import annotations

import io

from rich.console import Console
from typer.testing import CliRunner

from bgad.bench.cli import _describe_table, app
from bgad.bench.params import CellSettings, FlowParams, RunSettings, limits_in_words


def _rows(profile: str, method: str) -> dict[str, list[str]]:
    """name -> the cells of its row(s), read from the table rendered wide enough not to wrap."""
    out = Console(width=400, file=io.StringIO(), record=True)
    out.print(_describe_table(profile, method, {}))
    rows: dict[str, list[str]] = {}
    for line in out.export_text().splitlines():
        cells = [c.strip() for c in line.strip("│ ").split("│")]
        if len(cells) == 5:
            rows.setdefault(cells[0], []).extend(cells[1:])
    return rows


def test_limits_are_words() -> None:
    assert limits_in_words(CellSettings.model_fields["input_size"]) == ">= 32, <= 2048, multiple of 32"
    assert limits_in_words(FlowParams.model_fields["beta"]) == "> 0, < 1"
    assert limits_in_words(RunSettings.model_fields["threads"]) == ">= 1, or none"
    assert limits_in_words(FlowParams.model_fields["spp_variant"]) == "one of code, paper"
    assert limits_in_words(RunSettings.model_fields["data_root"]) == ""


def test_describe_shows_the_profiles_value() -> None:
    rows = _rows("cpu", "bgad")
    assert rows["input_size"][:3] == ["every method", "128", ">= 32, <= 2048, multiple of 32"]
    assert rows["n_known_anomalies"][1] == "3"  # the cpu profile's, not the model's default 10
    assert rows["meta_epochs"][1] == "4"
    assert rows["coreset_batch"][1] == "8 (-m patchcore)"  # another method's setting: its value there
    assert _rows("quick", "bgad")["meta_epochs"][1] == "2"


def test_describe_has_no_pydantic_internals() -> None:
    result = CliRunner().invoke(app, ["config", "--profile", "cpu", "-m", "patchcore", "--describe"])
    assert result.exit_code == 0, result.output
    assert "Ge(" not in result.output and "MultipleOf" not in result.output


def test_describe_reports_a_bad_profile_in_one_line() -> None:
    result = CliRunner().invoke(app, ["config", "--profile", "nope", "--describe"])
    assert result.exit_code == 2 and "unknown profile 'nope'" in result.output
