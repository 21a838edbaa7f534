"""The one test harness shared by the suites: tools, free ports, and real server processes (MLflow,
Prometheus, ``bentoml serve``), each in its own process group that stopping takes down whole."""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED = REPO_ROOT.parent / "shared"
VENV_BIN = Path(sys.executable).parent
# Holds the sitecustomize.py that injects faults into served processes (see with_faults).
FAULTS_DIR = REPO_ROOT / "tests" / "faults"
# A free port picked here can be taken by another test's server before ours binds it: start again.
BIND_ATTEMPTS = 3
# What coverage's `patch = ["subprocess"]` (pyproject.toml) sets so that child processes measure themselves.
COVERAGE_SUBPROCESS_VARIABLES = ("COVERAGE_PROCESS_CONFIG", "COVERAGE_PROCESS_START")


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def unavailable(reason: str) -> None:
    """A missing tool or server: a failure under CI (nothing may silently not run), a skip elsewhere."""
    if in_ci():
        pytest.fail(f"{reason} (required under CI=true)")
    pytest.skip(reason)


def require_tool(name: str) -> str:
    path = shutil.which(name) or shutil.which(name, path=str(REPO_ROOT / ".tools" / "bin"))
    if path is None:
        unavailable(f"{name} is not installed; `./run setup` installs it")
    assert path is not None
    return path


def shared_data_path() -> Path:
    path = Path(os.environ.get("TABULA_DATA_PATH", SHARED / "data" / "cal_housing.csv.gz"))
    if not path.is_file():
        unavailable(f"data set not found at {path}; set TABULA_DATA_PATH")
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_http(url: str, timeout: float, process: subprocess.Popen[bytes] | None = None) -> None:
    """Poll until ``url`` answers 200; fail early if the process died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode} before {url} answered")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.25)
    raise TimeoutError(f"{url} did not answer within {timeout}s")


def stop(process: subprocess.Popen[bytes], timeout: float = 15) -> None:
    """SIGTERM the process group, then SIGKILL what is left of it.

    The leader exiting is not the end: ``bentoml serve``'s arbiter can exit before its worker, which
    would then outlive the test run, so the group is killed once more in any case."""
    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=timeout)
        except (subprocess.TimeoutExpired, ProcessLookupError):
            with suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=5)
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)


@contextmanager
def measuring_alone(lock_path: Path) -> Iterator[None]:
    """Hold the session's load lock: no other test that measures or drives heavy load runs meanwhile.

    Goodput and tail latency on a 2-core machine depend on what else runs: the crowd's closed-loop clients
    once waited over 5 s while another xdist worker started three peer servers. An exclusive ``flock`` on
    one file, shared by every worker of the session (the ``load_lock`` fixture), serialises those stretches.
    """
    with lock_path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def unmeasured(env: dict[str, str] | None = None) -> dict[str, str]:
    """``env`` (default: this process') for a child not traced for coverage: one that runs none of this
    project's code (an MLflow server, schemathesis) or code other suites measure (the fault matrix's
    servers). Tracing such a child only costs CPU: a fifth of the MLflow server tests'."""
    environment = dict(os.environ if env is None else env)
    for name in COVERAGE_SUBPROCESS_VARIABLES:
        environment.pop(name, None)
    return environment


@contextmanager
def server(
    command: Sequence[str],
    health_url: str,
    log_path: Path,
    timeout: float = 60,
    env: dict[str, str] | None = None,
    measured: bool = True,
) -> Iterator[subprocess.Popen[bytes]]:
    """Run a server in its own process group until the block ends; its output goes to ``log_path``.

    ``measured=False``: a server that runs none of this project's code (:func:`unmeasured`).
    """
    environment = os.environ.copy() | (env or {})
    if not measured:
        environment = unmeasured(environment)
    environment["PATH"] = f"{VENV_BIN}{os.pathsep}{environment.get('PATH', '')}"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            list(command), stdout=log, stderr=subprocess.STDOUT, env=environment, start_new_session=True
        )
        try:
            wait_http(health_url, timeout, process)
        except (RuntimeError, TimeoutError) as exc:
            stop(process)
            raise RuntimeError(
                f"{exc}\n--- {log_path} ---\n{log_path.read_text(errors='replace')[-4000:]}"
            ) from exc
        try:
            yield process
        finally:
            stop(process)


@dataclass(frozen=True)
class Running:
    url: str
    process: subprocess.Popen[bytes]


@contextmanager
def mlflow_server(root: Path) -> Iterator[Running]:
    """A real ``mlflow server`` on a free loopback port: SQLite backend, artifacts served from ``root``."""
    port = free_port()
    root.mkdir(parents=True, exist_ok=True)
    command = [
        str(VENV_BIN / "mlflow"),
        "server",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
        "--backend-store-uri",
        f"sqlite:///{root / 'mlflow.db'}",
        "--artifacts-destination",
        str(root / "artifacts"),
        "--serve-artifacts",
    ]
    url = f"http://127.0.0.1:{port}"
    # The GenAI job runner is a second process this project never uses; skip it to start faster.
    env = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    health = f"{url}/health"
    with server(command, health, root / "server.log", timeout=180, env=env, measured=False) as process:
        yield Running(url, process)


@contextmanager
def prometheus_server(root: Path, scrape_configs: list[dict[str, Any]]) -> Iterator[str]:
    """A real Prometheus on a free loopback port with these scrape configs; yields its base URL."""
    binary = require_tool("prometheus")
    root.mkdir(parents=True, exist_ok=True)
    config = root / "prometheus.yml"
    config.write_text(yaml.safe_dump({"global": {"scrape_interval": "1s"}, "scrape_configs": scrape_configs}))
    port = free_port()
    command = [
        binary,
        f"--config.file={config}",
        f"--storage.tsdb.path={root / 'tsdb'}",
        f"--web.listen-address=127.0.0.1:{port}",
    ]
    with server(command, f"http://127.0.0.1:{port}/-/ready", root / "prometheus.log", timeout=60):
        yield f"http://127.0.0.1:{port}"


@dataclass
class Server:
    """A ``bentoml serve`` process on a loopback port, its output in ``log_path``."""

    base_url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")


def service_env(bentoml_home: Path, **settings: str) -> dict[str, str]:
    """This environment, a BentoML home and ``TABULA_SERVICE_*`` settings (``max_batch_rows="7"``)."""
    env = {**os.environ, "BENTOML_HOME": str(bentoml_home), "BENTOML_DO_NOT_TRACK": "true"}
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env.update({f"TABULA_SERVICE_{key.upper()}": value for key, value in settings.items()})
    return env


def with_faults(env: dict[str, str], **faults: str) -> dict[str, str]:
    """``env`` plus the test-only faults of tests/faults/sitecustomize.py (e.g. ``raise_rate="0.5"``)."""
    paths = [str(FAULTS_DIR), *filter(None, [env.get("PYTHONPATH")])]
    return {
        **env,
        "PYTHONPATH": os.pathsep.join(paths),
        **{f"TABULA_TEST_FAULT_{name.upper()}": value for name, value in faults.items()},
    }


def server_home(shared_home: Path, log_path: Path) -> Path:
    """A BentoML home of one server's own, beside its log, linking ``shared_home``'s model and Bento stores.

    BentoML keeps its Prometheus multiprocess files in the home: servers sharing one would report each
    other's metrics.
    """
    home = log_path.with_suffix(".bentoml")
    home.mkdir()
    for store in ("models", "bentos"):
        (shared_home / store).mkdir(exist_ok=True)
        (home / store).symlink_to(shared_home / store, target_is_directory=True)
    return home


def start_server(target: list[str], env: dict[str, str], log_path: Path, may_exit: bool = False) -> Server:
    """``bentoml serve`` of ``target`` (a Bento tag, or ``module:Service`` and options) until its worker
    answers /livez; on a port another process took meanwhile, again on a new one. With ``may_exit``, a
    server that exits for another reason (a test of start-up faults) is returned as it is."""
    for attempt in range(1, BIND_ATTEMPTS + 1):
        port = free_port()
        with log_path.open("wb") as log:
            command = [sys.executable, "-m", "bentoml", "serve", *target, "--host", "127.0.0.1"]
            process = subprocess.Popen(
                [*command, "--port", str(port)],
                cwd=REPO_ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        server = Server(f"http://127.0.0.1:{port}", process, log_path)
        if wait_alive(server):
            return server
        stop(process)
        if "address already in use" not in server.log().lower() or attempt == BIND_ATTEMPTS:
            break
    if may_exit:
        return server
    raise AssertionError(f"bentoml serve exited with {process.returncode}:\n{server.log()[-4000:]}")


def wait_alive(server: Server, timeout: float = 120) -> bool:
    """True once the worker answers /livez, False if the server exited first.

    The port is bound before the worker has imported the service, so a request sent earlier waits
    unanswered; on a loaded two-CPU runner, start-up under coverage takes tens of seconds.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            return False
        try:
            if httpx.get(f"{server.base_url}/livez", timeout=1).status_code == 200:
                return True
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    stop_server(server)
    raise AssertionError(f"bentoml serve did not come up in {timeout:.0f} s:\n{server.log()[-4000:]}")


def wait_ready(server: Server, timeout: float = 120) -> None:
    """Until /readyz answers 200 (model loaded, golden set reproduced)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if httpx.get(f"{server.base_url}/readyz", timeout=2).status_code == 200:
            return
        time.sleep(0.3)
    raise AssertionError(f"service never became ready:\n{server.log()[-4000:]}")


def stop_server(server: Server) -> None:
    stop(server.process, timeout=20)
