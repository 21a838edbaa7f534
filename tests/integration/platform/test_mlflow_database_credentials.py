"""k8s/base runs `mlflow server --backend-store-uri postgresql+psycopg://postgres:5432/$(POSTGRES_DB)`
with the credentials in PGUSER/PGPASSWORD. Here: a real PostgreSQL with password authentication and a
password full of URI delimiters, and MLflow's own SQLAlchemy store opened with the manifest's URI and
environment, as the server opens it. libpq reads PGUSER and PGPASSWORD (PostgreSQL docs, libpq
"Environment Variables"); the old form, the password pasted into the URI, breaks on the same password.
The driver is psycopg 3, named in the URI."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import VENV_BIN, free_port, unavailable
from tests.unit.test_k8s_manifests import _by_kind, _render

pytestmark = [pytest.mark.integration, pytest.mark.slow]

POSTGRES_BIN = Path("/usr/lib/postgresql/15/bin")
USER = "mlflow"
# Every character that ends a URI part: userinfo (`@` `:`), path (`/`), percent-escapes (`%`).
PASSWORD = "p@ss:w/rd%41#?"  # noqa: S105 - a throwaway test database's password


@pytest.fixture(scope="module")
def postgres() -> Iterator[int]:
    """A PostgreSQL 15 cluster on loopback, scram-sha-256 only, superuser `mlflow` with PASSWORD."""
    if not (POSTGRES_BIN / "initdb").is_file() or shutil.which("runuser") is None or os.geteuid() != 0:
        unavailable("PostgreSQL 15 (Debian package postgresql) and root for runuser are needed")
    # Not under pytest's tmp_path: its parent is private to root, and PostgreSQL runs as `postgres`.
    with tempfile.TemporaryDirectory(prefix="tabula-pg-") as scratch:
        yield from _cluster(Path(scratch))


def _cluster(root: Path) -> Iterator[int]:
    root.chmod(0o755)
    data, password_file = root / "data", root / "password"
    password_file.write_text(PASSWORD + "\n")
    shutil.chown(root, "postgres")
    shutil.chown(password_file, "postgres")
    as_postgres = ["runuser", "-u", "postgres", "--"]
    subprocess.run(
        [*as_postgres, str(POSTGRES_BIN / "initdb"), "-D", str(data), "-U", USER, "-A", "scram-sha-256",
         f"--pwfile={password_file}"],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    port = free_port()
    options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1"
    pg_ctl = [*as_postgres, str(POSTGRES_BIN / "pg_ctl"), "-D", str(data)]
    subprocess.run([*pg_ctl, "-o", options, "-l", str(root / "log"), "-w", "start"], check=True, timeout=60)
    try:
        yield port
    finally:
        subprocess.run([*pg_ctl, "-m", "fast", "stop"], check=False, timeout=60)


def open_store(uri: str, env: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """MLflow's SqlAlchemyStore (what `mlflow server` builds from --backend-store-uri), in a process
    with only this environment; it runs the schema migrations and reads the default experiment."""
    code = (
        "import sys\n"
        "from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore\n"
        "store = SqlAlchemyStore(sys.argv[1], sys.argv[2])\n"
        "print(store.get_experiment('0').name)\n"
    )
    environment = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), **env}
    return subprocess.run(
        [str(VENV_BIN / "python"), "-c", code, uri, str(tmp_path / "artifacts")],
        env=environment, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip


def manifest_uri_and_env(port: int) -> tuple[str, dict[str, str]]:
    """The MLflow container's backend URI and libpq variables from `kubectl kustomize k8s/base`, with
    the Secret's values filled in the way the kubelet expands `$(VAR)` and `secretKeyRef`."""
    container = _by_kind(_render("base"), "Deployment")["mlflow"]["spec"]["template"]["spec"]["containers"][0]
    [uri] = [arg.split("=", 1)[1] for arg in container["args"] if arg.startswith("--backend-store-uri=")]
    secret = {"POSTGRES_USER": USER, "POSTGRES_PASSWORD": PASSWORD, "POSTGRES_DB": "postgres"}
    env = {item["name"]: secret[item["valueFrom"]["secretKeyRef"]["key"]]
           for item in container["env"] if "valueFrom" in item}  # fmt: skip
    uri = uri.replace("$(POSTGRES_DB)", env["POSTGRES_DB"]).replace("postgres:5432", f"127.0.0.1:{port}")
    return uri, env


def test_mlflow_connects_with_a_password_full_of_uri_delimiters(postgres: int, tmp_path: Path) -> None:
    uri, env = manifest_uri_and_env(postgres)
    assert PASSWORD not in uri
    assert set(env) == {"PGUSER", "PGPASSWORD", "POSTGRES_DB"}
    opened = open_store(uri, env, tmp_path)
    assert opened.returncode == 0, opened.stderr[-3000:]
    assert opened.stdout.strip().splitlines()[-1] == "Default"


def connect(uri: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """One SQLAlchemy connection, no retries (MLflow's store retries for minutes)."""
    code = "import sys, sqlalchemy\nsqlalchemy.create_engine(sys.argv[1]).connect().close()\n"
    return subprocess.run(
        [str(VENV_BIN / "python"), "-c", code, uri], env={"PATH": os.environ["PATH"], **env},
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def test_the_password_in_the_uri_breaks_and_a_wrong_one_is_refused(postgres: int) -> None:
    from sqlalchemy.engine import make_url

    pasted = f"postgresql+psycopg://{USER}:{PASSWORD}@127.0.0.1:{postgres}/postgres"
    with pytest.raises(ValueError, match="invalid literal for int"):  # the old URI: `w` read as the port
        make_url(pasted)
    uri, env = manifest_uri_and_env(postgres)
    assert connect(uri, env).returncode == 0
    wrong = connect(uri, {**env, "PGPASSWORD": "not-it"})
    assert wrong.returncode != 0
    assert "password authentication failed" in wrong.stderr
