"""`tabula loadtest` refuses bad options with one readable line, before starting any load."""

from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from cli.load import register

pytestmark = pytest.mark.unit


def cli() -> typer.Typer:
    app = typer.Typer()
    register(app)

    @app.command()
    def version() -> None:
        """Second command, so typer keeps `loadtest` as a subcommand like the root CLI does."""

    return app


@pytest.mark.parametrize(
    ("options", "complaint"),
    [
        (["--run-time", "soon"], "run_time (given 'soon'): Value error, run_time must look like"),
        (["--tags", "smoke"], "invalid settings: Value error, unknown tags ['smoke']"),
        (["--max-error-rate", "2"], "max_error_rate (given 2.0): Input should be less than or equal to 1"),
        (["--url", "not a url"], "url (given 'not a url'): Input should be a valid URL"),
        (["--users", "0"], "users (given 0): Input should be greater than or equal to 1"),
    ],
)
def test_invalid_options_exit_2_with_one_line(options: list[str], complaint: str, tmp_path: Path) -> None:
    result = CliRunner().invoke(cli(), ["loadtest", "--out", str(tmp_path), *options])

    assert result.exit_code == 2
    assert result.output.count("\n") == 1
    assert result.output.startswith("error: invalid setting")
    assert complaint in result.output


def test_help_lists_every_gate() -> None:
    result = CliRunner().invoke(cli(), ["loadtest", "--help"], env={"COLUMNS": "200"})

    assert result.exit_code == 0
    for option in ("--url", "--users", "--spawn-rate", "--run-time", "--tags", "--out"):
        assert option in result.output
    for gate in ("--p95-ms", "--p99-ms", "--max-error-rate", "--min-rps"):
        assert gate in result.output
