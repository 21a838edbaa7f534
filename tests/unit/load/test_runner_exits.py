"""How a Locust run that produced no results leaves `tabula loadtest`: a crash is an unexpected failure
(exit 1), a run past its time is a timeout (exit 7), as README's exit codes say; bad settings never
reach Locust (exit 2, tests/unit/load/test_cli.py)."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from cli.load import register
from load import runner

pytestmark = pytest.mark.unit


def _invoke(tmp_path: Path) -> tuple[int, str]:
    app = typer.Typer()
    register(app)

    @app.command()
    def version() -> None:
        """Second command, so typer keeps `loadtest` as a subcommand."""

    result = CliRunner().invoke(app, ["loadtest", "--out", str(tmp_path), "--run-time", "2s"])
    return result.exit_code, result.output


def test_locust_past_its_time_exits_7(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    def hangs(command: list[str], **kwargs: Any) -> subprocess.CompletedProcess[bytes]:
        raise subprocess.TimeoutExpired(command, kwargs["timeout"])

    monkeypatch.setattr(runner.subprocess, "run", hangs)
    code, output = _invoke(tmp_path)
    assert code == 7
    assert "\nerror: locust did not finish within 67 s; see " in output


def test_locust_exiting_without_results_exits_1(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    def crashes(command: list[str], **kwargs: Any) -> subprocess.CompletedProcess[bytes]:
        kwargs["stdout"].write("Traceback (most recent call last):\nRuntimeError: gevent exploded\n")
        return subprocess.CompletedProcess(command, 0)  # exit 0, but no run_stats.json

    monkeypatch.setattr(runner.subprocess, "run", crashes)
    code, output = _invoke(tmp_path)
    assert code == 1
    assert "error: locust failed (exit 0): RuntimeError: gevent exploded; see " in output
