"""The DVC pipeline runs for real on the shared data: repro, metrics, params diff, push and pull."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.conftest import FAST_CANDIDATES, write_params
from tests.support import REPO_ROOT, VENV_BIN

pytestmark = [pytest.mark.integration, pytest.mark.slow]
PARAMS = "examples/housing/params.yaml"


def run(command: list[str], cwd: Path, env: dict[str, str]) -> str:
    completed = subprocess.run(
        command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600, check=False
    )
    assert completed.returncode == 0, f"{command} failed:\n{completed.stdout}\n{completed.stderr}"
    return completed.stdout


@pytest.fixture
def workspace(tmp_path: Path, data_path: Path) -> Path:
    """A git checkout holding the pipeline, the DVC metadata, the code it depends on and the data."""
    work = tmp_path / "work"
    work.mkdir()
    for name in ("dvc.yaml", ".dvcignore", ".dvc/config", ".dvc/.gitignore", "data/cal_housing.csv.gz.dvc"):
        (work / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO_ROOT / name, work / name)
    for package in ("training", "contracts", "examples"):
        shutil.copytree(REPO_ROOT / package, work / package, ignore=shutil.ignore_patterns("__pycache__"))
    (work / "metrics").mkdir()
    shutil.copy(data_path, work / "data" / "cal_housing.csv.gz")
    write_params(work / PARAMS, candidates={"ridge": FAST_CANDIDATES["ridge"]})
    return work


def test_dvc_repro_reproduces_a_training_run(workspace: Path, tmp_path: Path) -> None:
    env = os.environ | {
        "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}",
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "TABULA_ARTIFACT_ROOT": str(tmp_path / "artifacts"),
        "TABULA_MODEL_NAME": "dvc-model",
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.com",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.com",
    }
    env.pop("TABULA_DATA_PATH", None)
    dvc = str(VENV_BIN / "dvc")
    run(["git", "init", "-q"], workspace, env)
    # The committed .dvc file must describe exactly the shared data file.
    run([dvc, "status", "--json"], workspace, env)
    run([dvc, "remote", "modify", "--local", "local", "url", str(tmp_path / "remote")], workspace, env)

    run([dvc, "repro"], workspace, env)
    metrics = json.loads((workspace / "metrics" / "metrics.json").read_text())
    assert metrics["best"] == "ridge"
    assert metrics["decision"] == "first"
    assert 0.6 < metrics["test_rmse"] < 0.8
    data_summary = json.loads((workspace / "metrics" / "data.json").read_text())
    assert data_summary["rows"] == 20640
    registry = json.loads((workspace / "metrics" / "registry.json").read_text())
    assert registry[0]["aliases"] == ["challenger", "production"]

    shown = json.loads(run([dvc, "metrics", "show", "--json"], workspace, env))
    assert "metrics/metrics.json" in json.dumps(shown)

    run(["git", "add", "-A"], workspace, env)
    run(["git", "commit", "-qm", "baseline"], workspace, env)
    params = yaml.safe_load((workspace / PARAMS).read_text())
    params["candidates"]["ridge"]["params"]["alpha"] = 10.0
    (workspace / PARAMS).write_text(yaml.safe_dump(params))
    diff = json.loads(run([dvc, "params", "diff", "--json"], workspace, env))
    assert diff[PARAMS]["candidates.ridge.params.alpha"] == {"old": 1.0, "new": 10.0, "diff": 9.0}
    status = run([dvc, "status"], workspace, env)
    assert "train" in status
    assert "prepare" not in status

    # The data travels through the remote.
    run([dvc, "push"], workspace, env)
    (workspace / "data" / "cal_housing.csv.gz").unlink()
    shutil.rmtree(workspace / ".dvc" / "cache")
    run([dvc, "pull", "data/cal_housing.csv.gz.dvc"], workspace, env)
    assert (workspace / "data" / "cal_housing.csv.gz").stat().st_size == 420083
