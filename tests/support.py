"""Helpers shared by the test suites: tools, free ports, and real server processes."""

from __future__ import annotations

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
    """SIGTERM the process group, then SIGKILL what is left."""
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=timeout)
    except (subprocess.TimeoutExpired, ProcessLookupError):
        with suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=5)


@contextmanager
def server(
    command: Sequence[str],
    health_url: str,
    log_path: Path,
    timeout: float = 60,
    env: dict[str, str] | None = None,
) -> Iterator[subprocess.Popen[bytes]]:
    """Run a server in its own process group until the block ends; its output goes to ``log_path``."""
    environment = os.environ.copy() | (env or {})
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
    with server(command, f"{url}/health", root / "server.log", timeout=180, env=env) as process:
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
