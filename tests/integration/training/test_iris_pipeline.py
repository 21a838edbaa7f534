"""`./run pipeline --example iris`: the local pipeline for the classifier, and how the example is chosen.

The run script and the `pipeline` command pick the example (housing stays the default); the pipeline's
data, train, register and gate steps leave a `production` version of iris-species on a real MLflow
server. The whole flow (Bento, `bentoml serve`, sample predictions, Locust) needs the service to serve
classifiers, which branch `classify` brings (CONTRACT3, "Classification in the service").
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient
from rich.console import Console
from typer.testing import CliRunner

from cli import local_pipeline
from cli.main import app
from tests.integration.training.test_iris_mlflow import FAST_IRIS, iris_params
from tests.support import REPO_ROOT, VENV_BIN, free_port
from training.config import TrainingSettings

pytestmark = [pytest.mark.integration]

PIPELINE_MODEL = "iris-species-local-pipeline"
SHARED_CSV = REPO_ROOT.parent / "shared" / "data" / "cal_housing.csv.gz"
# A stand-in for uv: records what ./run hands it (the tabula command and its environment) and exits.
RECORDING_UV = """#!/usr/bin/env bash
[ "$1" = run ] || exit 0
printf '%s\\n' "${TABULA_DATA_PATH-<unset>}" "$*" > "$RECORD"
"""


def run_script(tmp_path: Path, *args: str, **env: str) -> tuple[str, str]:
    """`./run pipeline ARGS` with uv recorded: (TABULA_DATA_PATH it got, the command it ran)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    uv = bin_dir / "uv"
    uv.write_text(RECORDING_UV)
    uv.chmod(uv.stat().st_mode | stat.S_IXUSR)
    record = tmp_path / "record.txt"
    clean = {k: v for k, v in os.environ.items() if k not in {"TABULA_DATA_PATH", "TABULA_EXAMPLE"}}
    completed = subprocess.run(
        [str(REPO_ROOT / "run"), "pipeline", *args],
        env=clean | {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "RECORD": str(record)} | env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    data_path, command = record.read_text().splitlines()
    return data_path, command


@pytest.mark.parametrize(
    ("args", "env", "housing"),
    [
        ((), {}, True),
        (("--example", "iris"), {}, False),
        (("--example=iris", "--port", "3001"), {}, False),
        ((), {"TABULA_EXAMPLE": "iris"}, False),
        (("--example", "housing"), {"TABULA_EXAMPLE": "iris"}, True),
        (("--example", "iris", "--example", "housing"), {}, True),
    ],
)
def test_run_gives_only_housing_the_shared_housing_csv(
    tmp_path: Path, args: tuple[str, ...], env: dict[str, str], housing: bool
) -> None:
    if housing and not SHARED_CSV.is_file():
        pytest.fail(f"{SHARED_CSV} is missing: the run script's housing default cannot be checked")
    data_path, command = run_script(tmp_path, *args, **env)

    assert command == " ".join(("run", "--frozen", "tabula", "pipeline", *args))
    if housing:
        assert Path(data_path).resolve() == SHARED_CSV.resolve()
    else:
        assert data_path == "<unset>"


def test_a_data_path_given_is_kept_for_any_example(tmp_path: Path) -> None:
    data_path, _ = run_script(tmp_path, "--example", "iris", TABULA_DATA_PATH="/data/flowers.csv")
    assert data_path == "/data/flowers.csv"


def test_the_pipeline_command_takes_the_example(monkeypatch: pytest.MonkeyPatch) -> None:
    taken: list[tuple[TrainingSettings, local_pipeline.PipelineOptions]] = []
    monkeypatch.setattr(local_pipeline, "run", lambda settings, options, _: taken.append((settings, options)))

    env: dict[str, str | None] = {
        "TABULA_EXAMPLE": None,
        "TABULA_MODEL_NAME": None,
        "TABULA_DATA_PATH": None,
    }
    result = CliRunner().invoke(app, ["pipeline", "--example", "iris", "--no-keep-serving"], env=env)
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(app, ["pipeline", "--no-keep-serving"], env=env)
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(app, ["pipeline", "--example", "orchids"], env=env)
    assert result.exit_code == 2, result.output
    assert "no example 'orchids'" in result.output

    (iris, _), (housing, _) = taken
    assert (iris.example, iris.model_name, iris.experiment, iris.target) == (
        "iris",
        "iris-species",
        "iris",
        "species",
    )
    assert (housing.example, housing.model_name) == ("housing", "housing-price")


@pytest.fixture
def iris_settings(mlflow_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> TrainingSettings:
    for key in [key for key in os.environ if key.startswith("TABULA_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    # The session's MLflow server is shared: a model name of this test's own (the CLI test above checks
    # that the example names iris-species).
    return TrainingSettings(
        example="iris",
        model_name=PIPELINE_MODEL,
        experiment=PIPELINE_MODEL,
        tracking_uri=mlflow_url,
        params_file=iris_params(tmp_path / "iris.yaml", FAST_IRIS),
    )


def test_iris_pipeline_leaves_a_production_version(iris_settings: TrainingSettings, mlflow_url: str) -> None:
    console = Console(record=True, width=150)

    report = local_pipeline.train_and_promote(iris_settings, console)

    shown = console.export_text()
    assert "1/6 data" in shown
    assert "example iris (classification): 150 rows from sklearn.datasets.load_iris" in shown
    assert "2/6 train, register, promote" in shown
    assert "test log-loss" in shown
    assert report.decision.outcome in {"first", "promoted", "unchanged"}
    production = MlflowClient(mlflow_url).get_model_version_by_alias(PIPELINE_MODEL, "production")
    assert production.version == report.decision.version
    assert f"{PIPELINE_MODEL} v{production.version}" in shown


@pytest.mark.slow
def test_the_whole_iris_pipeline_serves_predicts_and_load_tests(tmp_path: Path) -> None:
    reports = tmp_path / "reports"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TABULA_")} | {
        "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}",
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "TABULA_ARTIFACT_ROOT": str(tmp_path / "artifacts"),
        "TABULA_PARAMS_FILE": str(iris_params(tmp_path / "iris.yaml", FAST_IRIS)),
        "BENTOML_HOME": str(tmp_path / "bentoml"),
        "BENTOML_DO_NOT_TRACK": "true",
    }
    command = [str(VENV_BIN / "tabula"), "pipeline", "--example", "iris", "--port", str(free_port())]
    command += ["--load-seconds", "3", "--users", "2", "--report-dir", str(reports), "--no-keep-serving"]
    completed = subprocess.run(
        command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600, check=False
    )
    output = completed.stdout + completed.stderr
    assert "iris-species v1 promoted to production" in output
    assert completed.returncode == 0, output
    assert "Sample predictions" in output
    assert "probability" in output
    summary: dict[str, Any] = json.loads((reports / "loadtest" / "summary.json").read_text())
    assert summary["stats"]["total"]["requests"] > 0
    assert summary["stats"]["total"]["failures"] == 0
