"""Failures leave the CLI as one line with the error's exit code, whatever the message contains."""

from __future__ import annotations

import pytest
import typer

from cli.exits import handle_errors
from release.errors import ClusterTimeoutError

pytestmark = pytest.mark.unit


def test_a_domain_error_is_one_line_with_its_exit_code_and_brackets_survive(
    capsys: pytest.CaptureFixture[str],
) -> None:
    @handle_errors
    def command() -> None:
        raise ClusterTimeoutError("Rollout [tabula] at step 2/6 [env: TABULA_RELEASE_TIMEOUT_SECONDS]")

    with pytest.raises(typer.Exit) as caught:
        command()
    assert caught.value.exit_code == 7
    assert capsys.readouterr().err == (
        "error: Rollout [tabula] at step 2/6 [env: TABULA_RELEASE_TIMEOUT_SECONDS]\n"
    )


def test_ctrl_c_exits_130(capsys: pytest.CaptureFixture[str]) -> None:
    @handle_errors
    def command() -> None:
        raise KeyboardInterrupt

    with pytest.raises(typer.Exit) as caught:
        command()
    assert caught.value.exit_code == 130
    assert capsys.readouterr().err == "error: interrupted\n"
