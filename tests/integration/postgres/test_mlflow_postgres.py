"""MLflow on PostgreSQL, as the cluster runs it: `mlflow server` with the flags of
k8s/base/mlflow/deployment.yaml (tests/postgres.py reads them), its backend store in a database of the
session's real PostgreSQL server. The real CLI trains, registers and promotes against it; what the
registry holds is read back from PostgreSQL's own tables. With the database down, every call fails
with one readable line and the registry is as it was once the database is back."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import write_params
from tests.postgres import Postgres, mlflow_k8s_command, mlflow_on_postgres
from tests.support import REPO_ROOT, VENV_BIN

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MODEL = "tabula-on-postgres"
DATABASE = "mlflow"


@dataclass(frozen=True)
class Registry:
    url: str
    postgres: Postgres
    params: Path
    data: Path

    def tabula(self, *args: str, retries: int = 4) -> subprocess.CompletedProcess[str]:
        env = os.environ | {
            "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}",
            "MLFLOW_TRACKING_URI": self.url,
            "TABULA_PARAMS_FILE": str(self.params),
            "TABULA_DATA_PATH": str(self.data),
            "TABULA_MODEL_NAME": MODEL,
            "TABULA_MLFLOW_RETRIES": str(retries),
        }
        return subprocess.run(
            [str(VENV_BIN / "tabula"), *args],
            cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600, check=False,
        )  # fmt: skip

    def state(self) -> str:
        """Versions, their run and status, and the aliases, straight from MLflow's PostgreSQL tables."""
        versions = self.postgres.sql(
            "SELECT string_agg(version || ':' || run_id || ':' || status, ',' ORDER BY version) "
            "FROM model_versions WHERE name = %s",
            DATABASE,
            (MODEL,),
        )
        aliases = self.postgres.sql(
            "SELECT string_agg(alias || '=' || version, ',' ORDER BY alias) "
            "FROM registered_model_aliases WHERE name = %s",
            DATABASE,
            (MODEL,),
        )
        return f"versions {versions}; aliases {aliases}"

    def production(self) -> str:
        return self.postgres.sql(
            "SELECT version FROM registered_model_aliases WHERE name = %s AND alias = 'production'",
            DATABASE,
            (MODEL,),
        )


@pytest.fixture(scope="module")
def registry(
    postgres: Postgres, small_data: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Registry]:
    root = tmp_path_factory.mktemp("mlflow-postgres")
    database_url = postgres.create_database(DATABASE)
    params = write_params(root / "params.yaml", candidates=None)
    with mlflow_on_postgres(root, database_url) as running:
        yield Registry(running.url, postgres, params, small_data)


def test_the_server_runs_with_the_manifests_flags(tmp_path: Path) -> None:
    command = mlflow_k8s_command(5001, "postgresql://u@127.0.0.1:1/db", tmp_path)
    assert command[0] == str(VENV_BIN / "mlflow")
    assert command[1] == "server"
    assert "--workers=2" in command
    assert "--serve-artifacts" in command
    assert "--host=127.0.0.1" in command
    assert "--port=5001" in command
    assert "--backend-store-uri=postgresql://u@127.0.0.1:1/db" in command
    assert any(flag.startswith("--allowed-hosts=") and "127.0.0.1:*" in flag for flag in command)


def test_train_registers_and_promotes_into_postgres(registry: Registry) -> None:
    first = registry.tabula("train", "--candidate", "ridge")
    assert first.returncode == 0, first.stderr[-3000:]
    assert registry.production() == "1"
    # Another model (a new fingerprint), so a second version; the gate may keep the champion (exit 5).
    second = registry.tabula("train", "--candidate", "linear")
    assert second.returncode in {0, 5}, second.stderr[-3000:]
    assert registry.state().startswith("versions 1:")
    assert ",2:" in registry.state()
    promoted = registry.tabula("promote", "--version", "2", "--force")
    assert promoted.returncode == 0, promoted.stderr[-3000:]
    assert registry.production() == "2"
    # The alias the CLI reads back is the one PostgreSQL holds.
    listed = registry.tabula("models", "--json")
    assert listed.returncode == 0, listed.stderr[-3000:]
    assert '"production"' in listed.stdout


def test_with_the_database_down_calls_fail_in_one_line_and_the_registry_is_unchanged(
    registry: Registry,
) -> None:
    if not registry.production():
        assert registry.tabula("train", "--candidate", "ridge").returncode == 0
    before = registry.state()
    registry.postgres.ctl("stop", "-m", "fast")
    try:
        health = httpx.get(f"{registry.url}/health", timeout=10)
        assert health.status_code == 200  # MLflow itself is up; only its database is gone
        commands = [("train",), ("promote", "--version", "1", "--force"), ("promote", "--rollback")]
        # Side by side: each fails on its own, and nothing they could change is reachable.
        with ThreadPoolExecutor(max_workers=len(commands)) as pool:
            results = list(pool.map(lambda command: registry.tabula(*command, retries=0), commands))
        for command, result in zip(commands, results, strict=True):
            assert result.returncode == 4, (command, result.returncode, result.stderr[-3000:])
            errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
            assert len(errors) == 1, result.stderr[-3000:]
            assert "Traceback" not in result.stderr
    finally:
        registry.postgres.ctl("start")
    assert registry.state() == before
    # MLflow reconnects once the database is back.
    again = registry.tabula("models", "--json")
    assert again.returncode == 0, again.stderr[-3000:]
