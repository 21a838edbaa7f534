"""LoadSettings: environment parsing, validation, and the hand-over to Locust's child process."""

from pathlib import Path

import pytest
from pydantic import ValidationError

from load.config import LoadSettings
from load.runner import locust_command, settings_environment

pytestmark = pytest.mark.unit


def test_environment_sets_every_kind_of_field(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TABULA_LOAD_URL", "http://127.0.0.1:3999/")
    monkeypatch.setenv("TABULA_LOAD_TAGS", "single, batch")
    monkeypatch.setenv("TABULA_LOAD_RUN_TIME", "1m30s")
    monkeypatch.setenv("TABULA_LOAD_P95_MS", "150")

    settings = LoadSettings()

    assert settings.base_url == "http://127.0.0.1:3999"
    assert settings.tags == ["single", "batch"]
    assert settings.run_time_seconds() == 90
    assert settings.p95_ms == 150


@pytest.mark.parametrize(("run_time", "seconds"), [("45", 45), ("30s", 30), ("2m", 120), ("1h1s", 3601)])
def test_run_time_in_locust_syntax(run_time: str, seconds: int) -> None:
    assert LoadSettings(run_time=run_time).run_time_seconds() == seconds


@pytest.mark.parametrize(
    ("overrides", "complaint"),
    [
        ({"run_time": "ten seconds"}, "run_time must look like"),
        ({"run_time": "0s"}, "at least one second"),
        ({"tags": "single,smoky"}, "unknown tags ['smoky']"),
        ({"single_weight": 0, "batch_weight": 0}, "cannot both be 0"),
        ({"max_error_rate": 1.5}, "less than or equal to 1"),
    ],
)
def test_invalid_settings_are_rejected(overrides: dict[str, object], complaint: str) -> None:
    with pytest.raises(ValidationError) as error:
        LoadSettings(**overrides)  # type: ignore[arg-type]
    assert complaint in str(error.value)


def test_child_environment_reproduces_the_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "rows.json").write_text("[]")
    settings = LoadSettings(
        url="http://127.0.0.1:4123",
        users=7,
        tags=["batch"],
        batch_size=5,
        run_time="3s",
        out=tmp_path / "report",
        payloads_file=tmp_path / "rows.json",
    )

    for name, value in settings_environment(settings).items():
        monkeypatch.setenv(name, value)

    assert LoadSettings() == settings


def test_locust_command_is_headless_and_writes_csv_and_html(tmp_path: Path) -> None:
    settings = LoadSettings(url="http://127.0.0.1:4123/", users=3, run_time="5s", tags=["single"])

    command = locust_command(settings, tmp_path)

    assert "--headless" in command
    assert command[command.index("--host") + 1] == "http://127.0.0.1:4123"
    assert command[command.index("--csv") + 1] == str(tmp_path / "locust")
    assert command[command.index("--html") + 1] == str(tmp_path / "report.html")
    assert command[command.index("--tags") + 1 :] == ["single"]
