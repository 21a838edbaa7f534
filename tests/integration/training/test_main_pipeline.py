"""The README's main job, ``tabula pipeline``, end to end on the embedded default (fast params)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import write_params
from tests.support import REPO_ROOT, VENV_BIN, free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_pipeline_trains_packages_serves_predicts_and_load_tests(small_data: Path, tmp_path: Path) -> None:
    params = write_params(tmp_path / "params.yaml", candidates=None)
    reports = tmp_path / "reports"
    env = os.environ | {
        "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}",
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "TABULA_ARTIFACT_ROOT": str(tmp_path / "artifacts"),
        "TABULA_PARAMS_FILE": str(params),
        "TABULA_DATA_PATH": str(small_data),
        "BENTOML_HOME": str(tmp_path / "bentoml"),
        "BENTOML_DO_NOT_TRACK": "true",
    }
    command = [str(VENV_BIN / "tabula"), "pipeline", "--port", str(free_port()), "--load-seconds", "3"]
    command += ["--users", "2", "--report-dir", str(reports), "--no-keep-serving"]
    completed = subprocess.run(
        command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600, check=False
    )
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, output
    for step in ("1/6 data", "2/6 train", "3/6 package", "4/6 serve", "5/6 sample", "6/6 short load test"):
        assert step in output
    assert "housing-price v1 promoted to production" in output
    assert "Sample predictions" in output
    assert "Swagger UI:" in output
    summary = json.loads((reports / "loadtest" / "summary.json").read_text())
    assert summary["stats"]["total"]["requests"] > 0
    assert (reports / "loadtest" / "report.html").stat().st_size > 0
    assert "model_version" in (reports / "service.log").read_text()
