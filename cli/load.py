"""Load-test commands of the ``tabula`` CLI."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cli.exits import handle_errors


@handle_errors
def loadtest(
    url: Annotated[str | None, typer.Option(help="Base URL of the service (TABULA_LOAD_URL).")] = None,
    users: Annotated[int | None, typer.Option(help="Concurrent simulated users (TABULA_LOAD_USERS).")] = None,
    spawn_rate: Annotated[
        float | None, typer.Option(help="Users started per second (TABULA_LOAD_SPAWN_RATE).")
    ] = None,
    run_time: Annotated[
        str | None, typer.Option(help="Duration, e.g. 30s, 2m, 1m30s (TABULA_LOAD_RUN_TIME).")
    ] = None,
    tags: Annotated[
        str | None,
        typer.Option(help="Comma-separated scenario tags: single, batch; default all (TABULA_LOAD_TAGS)."),
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Folder for CSV stats, HTML report, summary.json (TABULA_LOAD_OUT).")
    ] = None,
    example: Annotated[
        str | None,
        typer.Option(help="Example of the served model: housing, iris or a folder (TABULA_LOAD_EXAMPLE)."),
    ] = None,
    p95_ms: Annotated[
        float | None, typer.Option(help="Gate: highest accepted p95 latency, ms (TABULA_LOAD_P95_MS).")
    ] = None,
    p99_ms: Annotated[
        float | None, typer.Option(help="Gate: highest accepted p99 latency, ms (TABULA_LOAD_P99_MS).")
    ] = None,
    max_error_rate: Annotated[
        float | None,
        typer.Option(
            help="Gate: highest accepted share of failed requests, 0..1 (TABULA_LOAD_MAX_ERROR_RATE)."
        ),
    ] = None,
    min_rps: Annotated[
        float | None, typer.Option(help="Gate: lowest accepted requests per second (TABULA_LOAD_MIN_RPS).")
    ] = None,
) -> None:
    """Run the Locust load test headless against a URL and gate it on SLOs; exit 1 on any breach.

    Options left out come from the TABULA_LOAD_* environment, then load.config.LoadSettings' defaults.
    Exit codes: 0 every gate passed, 1 a gate breached or Locust crashed, 2 bad settings, 7 Locust timed out.
    """
    from rich.console import Console
    from rich.table import Table

    from contracts.settings import settings_with_overrides
    from load.config import LoadSettings
    from load.runner import run_load_test

    settings = settings_with_overrides(
        LoadSettings,
        url=url,
        users=users,
        spawn_rate=spawn_rate,
        run_time=run_time,
        tags=tags,
        out=out,
        example=example,
        p95_ms=p95_ms,
        p99_ms=p99_ms,
        max_error_rate=max_error_rate,
        min_rps=min_rps,
    )

    console = Console()
    console.print(
        f"Load test: {settings.base_url} users={settings.users} spawn-rate={settings.spawn_rate} "
        f"run-time={settings.run_time} tags={','.join(settings.tags) or 'all'} example={settings.example}"
    )
    # A Locust crash (LoadTestError, exit 1) or timeout (exit 7) leaves through handle_errors.
    summary = run_load_test(settings)

    table = Table(title=f"SLO gates ({summary.stats.total.requests} requests)")
    for column in ("gate", "threshold", "observed", "result"):
        table.add_column(column)
    for gate in summary.gates:
        observed = "-" if gate.observed is None else f"{gate.observed:.4g}"
        verdict = "[green]pass[/green]" if gate.passed else "[red]BREACH[/red]"
        table.add_row(gate.gate, f"{gate.threshold:g}", observed, verdict)
    console.print(table)
    console.print(f"Reports in {settings.out}: " + ", ".join(summary.files.values()))

    breaches = [gate for gate in summary.gates if not gate.passed]
    for gate in breaches:
        typer.echo(f"SLO gate {gate.gate} breached: {gate.message}", err=True)
    if breaches:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add this package's commands to the root CLI."""
    app.command("loadtest")(loadtest)
