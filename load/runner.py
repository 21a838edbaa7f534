"""Run the locustfile headless in a child process, then gate its results.

Locust is run as ``python -m locust`` rather than through its Python API in this process:
importing locust monkey-patches the standard library with gevent (sockets, threads, ssl),
which must not leak into the CLI or into a test session; Locust's own command line also
writes the CSV files and the HTML report with its charts exactly as a user running
``locust`` by hand gets them.
"""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from contracts.errors import ProductError
from load.config import LoadSettings
from load.gates import RUN_STATS_FILE, GateResult, RunStats, evaluate_gates

LOCUSTFILE = Path(__file__).with_name("locustfile.py")
CSV_PREFIX = "locust"
HTML_REPORT = "report.html"
SUMMARY_FILE = "summary.json"
LOCUST_LOG = "locust.log"
# Seconds Locust gives running tasks to finish after the run time, and extra slack for its start-up.
STOP_TIMEOUT_S = 5
STARTUP_SLACK_S = 60


class LoadTestError(ProductError):
    """Locust crashed (its settings were valid), so there are no results to gate: an unexpected failure."""

    exit_code = 1


class LoadTestTimeoutError(LoadTestError):
    """Locust did not finish within its run time plus the slack."""

    exit_code = 7


class LoadSummary(BaseModel):
    """What ``summary.json`` records about one gated run."""

    model_config = ConfigDict(frozen=True)

    url: str = Field(description="Service the load was sent to.")
    users: int = Field(description="Concurrent simulated users.")
    spawn_rate: float = Field(description="Users started per second.")
    run_time: str = Field(description="Requested duration, Locust syntax.")
    tags: list[str] = Field(description="Task tags run; empty means all.")
    started_at: datetime = Field(description="When the run started (UTC).")
    finished_at: datetime = Field(description="When the run finished (UTC).")
    passed: bool = Field(description="True when every gate passed.")
    gates: list[GateResult]
    stats: RunStats = Field(description="Final statistics the gates judged.")
    files: dict[str, str] = Field(description="Report files written, by kind, relative to the output folder.")


def settings_environment(settings: LoadSettings) -> dict[str, str]:
    """``TABULA_LOAD_*`` variables that give the locustfile in the child process the same settings."""
    variables: dict[str, str] = {}
    for name, value in settings.model_dump().items():
        if value is None:
            continue  # unset: the field's default
        rendered = ",".join(value) if isinstance(value, list) else str(value)
        variables[f"TABULA_LOAD_{name.upper()}"] = rendered
    return variables


def locust_command(settings: LoadSettings, out: Path) -> list[str]:
    command = [
        sys.executable,
        "-m",
        "locust",
        "--locustfile",
        str(LOCUSTFILE),
        "--headless",
        "--host",
        settings.base_url,
        "--users",
        str(settings.users),
        "--spawn-rate",
        str(settings.spawn_rate),
        "--run-time",
        settings.run_time,
        "--stop-timeout",
        str(STOP_TIMEOUT_S),
        "--csv",
        str(out / CSV_PREFIX),
        "--html",
        str(out / HTML_REPORT),
        "--only-summary",
        # The gates below judge failures; Locust's own exit code then only reports crashes.
        "--exit-code-on-error",
        "0",
    ]
    if settings.tags:
        command += ["--tags", *settings.tags]
    return command


def run_load_test(settings: LoadSettings) -> LoadSummary:
    """Run Locust against ``settings.url``, write its reports and ``summary.json`` to ``settings.out``."""
    out = settings.out
    out.mkdir(parents=True, exist_ok=True)
    run_stats_file = out / RUN_STATS_FILE
    run_stats_file.unlink(missing_ok=True)  # never gate a previous run's numbers
    # The settings alone configure the child: none of this process' TABULA_LOAD_* variables leak in.
    inherited = {name: value for name, value in os.environ.items() if not name.startswith("TABULA_LOAD_")}
    environment = inherited | settings_environment(settings)
    started_at = datetime.now(UTC)
    log_path = out / LOCUST_LOG
    with log_path.open("w", encoding="utf-8") as log:
        try:
            # The command is this interpreter running locust with validated settings; no shell.
            completed = subprocess.run(  # noqa: S603
                locust_command(settings, out),
                env=environment,
                stdout=log,
                stderr=subprocess.STDOUT,
                timeout=settings.run_time_seconds() + STOP_TIMEOUT_S + STARTUP_SLACK_S,
                check=False,
            )
        except subprocess.TimeoutExpired as error:
            raise LoadTestTimeoutError(
                f"locust did not finish within {error.timeout:.0f} s; see {log_path}"
            ) from error
    finished_at = datetime.now(UTC)
    if completed.returncode != 0 or not run_stats_file.exists():
        last_line = _last_line(log_path)
        raise LoadTestError(f"locust failed (exit {completed.returncode}): {last_line}; see {log_path}")

    stats = RunStats.model_validate_json(run_stats_file.read_text(encoding="utf-8"))
    gates = evaluate_gates(stats, settings)
    files = {
        "html_report": HTML_REPORT,
        "run_stats": RUN_STATS_FILE,
        "stats_csv": f"{CSV_PREFIX}_stats.csv",
        "stats_history_csv": f"{CSV_PREFIX}_stats_history.csv",
        "failures_csv": f"{CSV_PREFIX}_failures.csv",
        "exceptions_csv": f"{CSV_PREFIX}_exceptions.csv",
        "locust_log": LOCUST_LOG,
        "summary": SUMMARY_FILE,
    }
    summary = LoadSummary(
        url=settings.base_url,
        users=settings.users,
        spawn_rate=settings.spawn_rate,
        run_time=settings.run_time,
        tags=settings.tags,
        started_at=started_at,
        finished_at=finished_at,
        passed=all(gate.passed for gate in gates),
        gates=gates,
        stats=stats,
        files=files,
    )
    (out / SUMMARY_FILE).write_text(summary.model_dump_json(indent=2) + "\n", encoding="utf-8")
    return summary


def _last_line(path: Path) -> str:
    lines = [line.strip() for line in path.read_text(encoding="utf-8", errors="replace").splitlines()]
    meaningful = [line for line in lines if line]
    return meaningful[-1] if meaningful else "no output"
