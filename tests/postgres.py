"""A real, throwaway PostgreSQL server for a test session (Debian's `postgresql`, ENVIRONMENT.md).

PostgreSQL refuses to run as root, so when the tests run as root the data directory belongs to the
`postgres` user and every server program runs through `runuser -u postgres`. The server listens on a
free loopback port and on a Unix socket in its own directory; trust authentication, user `postgres`.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import yaml

from tests.support import REPO_ROOT, VENV_BIN, Running, free_port, require_tool, server, unavailable

# Debian installs each major version's server programs outside PATH, under /usr/lib/postgresql/<major>/bin.
DEBIAN_POSTGRES_ROOT = Path("/usr/lib/postgresql")
SERVER_PROGRAMS = ("initdb", "pg_ctl", "postgres")
SERVER_USER = "postgres"


def server_bin_dir() -> Path | None:
    """The newest installed major version's bin folder holding every server program, if any."""
    candidates = sorted(
        (path for path in DEBIAN_POSTGRES_ROOT.glob("*/bin") if path.parent.name.isdigit()),
        key=lambda path: int(path.parent.name),
    )
    complete = [path for path in candidates if all((path / name).is_file() for name in SERVER_PROGRAMS)]
    return complete[-1] if complete else None


@dataclass(frozen=True)
class Postgres:
    """A running server: connect with :attr:`url` (SQLAlchemy/psycopg) or run SQL with :meth:`sql`."""

    port: int
    data_dir: Path
    bin_dir: Path
    as_user: tuple[str, ...]

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{SERVER_USER}@127.0.0.1:{self.port}/{database}"

    def run(self, program: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*self.as_user, str(self.bin_dir / program), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def ctl(self, action: str, *extra: str) -> None:
        """`pg_ctl start|stop|restart` of this server; fails the test with the server log if it fails."""
        options = f"-p {self.port} -k {self.data_dir} -c listen_addresses=127.0.0.1"
        result = self.run(
            "pg_ctl", "-D", str(self.data_dir), "-o", options, "-l", str(self.data_dir / "server.log"),
            "-w", "-t", "60", action, *extra,
        )  # fmt: skip
        if result.returncode != 0:
            log = (self.data_dir / "server.log").read_text(errors="replace")[-3000:]
            raise RuntimeError(f"pg_ctl {action} failed: {result.stderr}\n--- server.log ---\n{log}")

    def sql(self, statement: str, database: str = "postgres", params: tuple[object, ...] = ()) -> str:
        """Run one statement with psycopg (autocommit) and return the first column of the first row."""
        import psycopg

        with (
            psycopg.connect(self.url(database), connect_timeout=10, autocommit=True) as connection,
            connection.cursor() as cursor,
        ):
            cursor.execute(statement, params or None)
            row = cursor.fetchone() if cursor.description else None
        return "" if row is None else str(row[0])

    def create_database(self, name: str) -> str:
        self.sql(f'CREATE DATABASE "{name}"')
        return self.url(name)


def _run_as_server_user() -> tuple[str, ...]:
    if os.geteuid() != 0:
        return ()
    try:
        pwd.getpwnam(SERVER_USER)
    except KeyError:
        unavailable(f"user {SERVER_USER!r} is missing; `./run setup` installs postgresql, which creates it")
    return (require_tool("runuser"), "-u", SERVER_USER, "--")


def _own(path: Path) -> None:
    if os.geteuid() == 0:
        user = pwd.getpwnam(SERVER_USER)
        shutil.chown(path, user.pw_uid, user.pw_gid)


@contextmanager
def postgres_server(extra_initdb: Sequence[str] = ()) -> Iterator[Postgres]:
    """initdb + start a server in a new folder; stop it (immediately) and remove the folder at the end.

    The folder is made directly in the system's temporary folder, not in pytest's: the server user must
    traverse every parent, and pytest makes its per-user folder private again whenever a session starts.
    """
    bin_dir = server_bin_dir()
    if bin_dir is None:
        unavailable(f"no PostgreSQL server under {DEBIAN_POSTGRES_ROOT}; `./run setup` installs it")
    assert bin_dir is not None
    as_user = _run_as_server_user()
    data_dir = Path(tempfile.mkdtemp(prefix="tabula-postgres-"))
    try:
        _own(data_dir)
        server = Postgres(port=free_port(), data_dir=data_dir, bin_dir=bin_dir, as_user=as_user)
        initdb = server.run("initdb", "-D", str(data_dir), "-A", "trust", "-U", SERVER_USER, *extra_initdb)
        if initdb.returncode != 0:
            raise RuntimeError(f"initdb failed: {initdb.stderr[-3000:]}")
        server.ctl("start")
        try:
            yield server
        finally:
            if (data_dir / "postmaster.pid").exists():
                server.run("pg_ctl", "-D", str(data_dir), "-m", "immediate", "stop")
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


MLFLOW_DEPLOYMENT = REPO_ROOT / "k8s" / "base" / "mlflow" / "deployment.yaml"


def mlflow_k8s_command(port: int, backend_store_uri: str, artifacts: Path) -> list[str]:
    """The MLflow container's command and flags from k8s/base/mlflow/deployment.yaml, on loopback.

    Only what must differ on this machine is replaced: the listen address and port, the backend store
    (this test server instead of the in-cluster Service) and the artifact folder; every other flag
    (workers, --serve-artifacts, --allowed-hosts, ...) is the manifest's.
    """
    deployment = yaml.safe_load(MLFLOW_DEPLOYMENT.read_text(encoding="utf-8"))
    [container] = [c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == "mlflow"]
    replaced = {
        "--host": "127.0.0.1",
        "--port": str(port),
        "--backend-store-uri": backend_store_uri,
        "--artifacts-destination": str(artifacts),
    }
    flags = []
    for argument in container["args"]:
        name, equals, _ = argument.partition("=")
        flags.append(f"{name}={replaced.pop(name)}" if equals and name in replaced else argument)
    assert not replaced, f"flags missing from {MLFLOW_DEPLOYMENT}: {sorted(replaced)}"
    [program] = container["command"]
    return [str(VENV_BIN / program), *flags]


@contextmanager
def mlflow_on_postgres(root: Path, database_url: str) -> Iterator[Running]:
    """A real MLflow server run as k8s/ runs it, its backend store in this PostgreSQL database."""
    port = free_port()
    root.mkdir(parents=True, exist_ok=True)
    command = mlflow_k8s_command(port, database_url, root / "artifacts")
    url = f"http://127.0.0.1:{port}"
    env = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    with server(command, f"{url}/health", root / "server.log", timeout=240, env=env) as process:
        yield Running(url, process)
