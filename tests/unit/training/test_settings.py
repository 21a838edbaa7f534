"""Settings from the environment with command-line values on top (contracts/settings.py): the given
values are validated like the environment's (pydantic-settings init arguments), so `--timeout -5`
fails in one line with exit 2 instead of slipping past `gt=0` as `model_copy(update=...)` let it."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from cli.main import app
from contracts.errors import ConfigError
from contracts.settings import settings_with_overrides
from load.config import LoadSettings
from release.config import ReleaseSettings, load_settings
from training.config import TrainingSettings

pytestmark = pytest.mark.unit


def test_a_given_value_is_validated_and_named() -> None:
    with pytest.raises(ConfigError) as error:
        load_settings(timeout_seconds=-5)
    assert error.value.exit_code == 2
    assert str(error.value) == "invalid setting timeout_seconds (given -5): Input should be greater than 0"


def test_a_bad_environment_value_names_its_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TABULA_RELEASE_POLL_SECONDS", "0")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:1")
    monkeypatch.setenv("TABULA_MLFLOW_RETRIES", "-1")
    with pytest.raises(ConfigError, match=r"^invalid setting TABULA_RELEASE_POLL_SECONDS: Input should be"):
        load_settings()
    with pytest.raises(ConfigError, match=r"^invalid setting TABULA_MLFLOW_RETRIES: Input should be"):
        settings_with_overrides(TrainingSettings)


def test_given_values_win_over_the_environment_and_none_means_not_given(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TABULA_RELEASE_TIMEOUT_SECONDS", "-1")  # invalid, but overridden
    monkeypatch.setenv("TABULA_RELEASE_NAMESPACE", "from-env")
    settings = load_settings(timeout_seconds=30, namespace=None)
    assert settings == ReleaseSettings(timeout_seconds=30, namespace="from-env")
    assert settings.timeout_seconds == 30
    assert settings.namespace == "from-env"
    # An alias field (MLflow's own variable) takes its field name on the command line.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:1")
    assert settings_with_overrides(TrainingSettings, tracking_uri="http://127.0.0.1:2").tracking_uri == (
        "http://127.0.0.1:2"
    )


def test_every_problem_is_on_one_line() -> None:
    with pytest.raises(ConfigError) as error:
        settings_with_overrides(LoadSettings, users=0, p95_ms=-1)
    assert "\n" not in str(error.value)
    assert str(error.value).count("invalid setting") == 2


def test_the_cli_refuses_a_negative_timeout_in_one_line_exit_2() -> None:
    result = CliRunner().invoke(app, ["deploy", "--timeout", "-5"])
    assert result.exit_code == 2, result.output
    assert (
        result.output
        == "error: invalid setting timeout_seconds (given -5.0): Input should be greater than 0\n"
    )
