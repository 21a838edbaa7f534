"""The benchmarks' targets: how each one is started, what a request to it looks like, where its answer is.

One :class:`Wire` per target, so the benchmark itself has no per-target branches. The peers a user
would pick instead of us (MLServer, KServe, plain BentoML) each get their own virtual environment,
made by uv from the pins below (their pins conflict with ours and with each other), and serve the
same scikit-learn model, exported once with joblib by the benchmark. MLServer and KServe also get
the same scikit-learn as ours, so the exported model loads unchanged.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

PROJECT_ROOT = Path(__file__).resolve().parent.parent
PEER_SERVERS = Path(__file__).with_name("peer_servers")
MODEL_FILE = "model.joblib"
# The model's name in the peers' URLs.
PEER_MODEL_NAME = "model"
# Where the peers' environments are kept between runs (keyed by their pins).
PEER_HOME = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "tabula-bench" / "peers"


class BenchError(RuntimeError):
    """A benchmark that cannot run; printed as one line."""


@dataclass
class Target:
    """A running target: its name and base URL (and its process, when the benchmark started it)."""

    name: str
    url: str
    process: subprocess.Popen[bytes] | None
    log_path: Path | None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    # One OpenMP thread, as the service sets for itself: with one per core, the peers' request threads
    # oversubscribed the cores, and KServe and plain BentoML stalled at 0-2 req/s in two runs of three.
    env = {"OMP_NUM_THREADS": "1", **os.environ, **(extra or {})}
    # `mlflow models serve --env-manager local` starts `uvicorn` by name.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


@contextmanager
def started(
    name: str, command: list[str], health_path: str, logs: Path, env: dict[str, str], cwd: Path = PROJECT_ROOT
) -> Iterator[Target]:
    """Start a server in its own process group, wait until ``health_path`` answers 200, stop it at the end.

    ``{port}`` in the command and in the environment's values becomes the port picked for it."""
    port = str(free_port())
    log_path = logs / f"{name}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(  # noqa: S603 - fixed interpreter and arguments
            [part.replace("{port}", port) for part in command],
            cwd=cwd,
            env={key: value.replace("{port}", port) for key, value in env.items()},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    target = Target(name, f"http://127.0.0.1:{port}", process, log_path)
    try:
        wait_healthy(target, health_path, timeout=180)
        yield target
    finally:
        stop(process)


def wait_healthy(target: Target, path: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if target.process is not None and target.process.poll() is not None:
            tail = target.log_path.read_text(errors="replace")[-1500:] if target.log_path else ""
            raise BenchError(f"{target.name} exited with {target.process.returncode}: {tail}")
        try:
            if httpx.get(f"{target.url}{path}", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise BenchError(f"{target.name} at {target.url} was not healthy within {timeout:.0f}s")


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


@dataclass(frozen=True)
class Benchmarked:
    """The registered model both benchmarks serve: its registry facts, BentoML model tag and Bento."""

    name: str
    version: str
    model_tag: str
    bento: str | None


def benchmarked_model(model_name: str, ref: str, bento: str | None, build: bool) -> Benchmarked:
    """The model at alias or version ``ref``, imported into the BentoML store; its Bento built when
    ``build`` and none was given. A registry or packaging failure is one readable line."""
    from service.packaging import PackagingError, build_bento_from_store, import_model, resolve

    tracking_uri = os.environ.get("MLFLOW_TRACKING_URI")
    try:
        resolved = resolve(model_name, ref, tracking_uri)
        model_tag = import_model(resolved, tracking_uri)
        if build and bento is None:
            bento = build_bento_from_store(model_tag, resolved.version, None)
    except PackagingError as error:
        raise BenchError(str(error)) from error
    return Benchmarked(resolved.name, resolved.version, model_tag, bento)


@dataclass(frozen=True)
class Context:
    """What a target's command may need: the Bento, the registered model and the exported model folder."""

    bento: str | None
    model_name: str
    model_version: str
    model_dir: Path
    python: Path = field(default_factory=lambda: Path(sys.executable))


@dataclass(frozen=True)
class Wire:
    """One target: its server command (with ``{port}``), health path, and request/answer shapes."""

    name: str
    path: str
    command: Callable[[Context], list[str]]
    health: str
    body: Callable[[list[str], list[float]], Any]
    # The first prediction in a decoded answer; None for the constant endpoint, which predicts nothing.
    first_prediction: Callable[[Any], float] | None
    # Pins of the target's own virtual environment; empty: it runs in ours.
    requirements: tuple[str, ...] = ()
    # Extra environment of the server process.
    env: Callable[[Context], dict[str, str]] = lambda _: {}
    # Where the server starts (the plain BentoML peer imports its service by module name from there).
    cwd: Path = PROJECT_ROOT
    note: str = ""

    def request_line(self, columns: list[str], row: dict[str, float]) -> str:
        """``<path> <json body>``: the line format of bench/overload.lua, used by wrk and Locust alike."""
        return f"{self.path} {json.dumps(self.body(columns, [row[name] for name in columns]))}"


def _service_command(context: Context) -> list[str]:
    if context.bento is None:
        raise BenchError("no Bento to serve")
    serve = [str(context.python), "-m", "bentoml", "serve", context.bento]
    return [*serve, "--host", "127.0.0.1", "--port", "{port}"]


def _mlflow_command(context: Context) -> list[str]:
    return [
        str(context.python), "-m", "mlflow", "models", "serve",
        "-m", f"models:/{context.model_name}/{context.model_version}",
        "--env-manager", "local", "--host", "127.0.0.1", "--port", "{port}", "--workers", "1",
    ]  # fmt: skip


def _mlserver_command(context: Context) -> list[str]:
    return [str(context.python.parent / "mlserver"), "start", str(context.model_dir / "mlserver")]


def _mlserver_env(_: Context) -> dict[str, str]:
    # MLServer's settings read MLSERVER_* variables; gRPC and metrics get ports of their own.
    return {
        "MLSERVER_HOST": "127.0.0.1",
        "MLSERVER_HTTP_PORT": "{port}",
        "MLSERVER_GRPC_PORT": str(free_port()),
        "MLSERVER_METRICS_PORT": str(free_port()),
        "MLSERVER_PARALLEL_WORKERS": "0",
    }


def _kserve_command(context: Context) -> list[str]:
    return [
        str(context.python), str(PEER_SERVERS / "kserve_model.py"), "--model_dir", str(context.model_dir),
        "--model_name", PEER_MODEL_NAME, "--http_port", "{port}", "--enable_grpc", "false",
        "--enable_latency_logging", "false",
    ]  # fmt: skip


def _bentoml_command(context: Context) -> list[str]:
    bentoml = context.python.parent / "bentoml"
    return [str(bentoml), "serve", "bentoml_plain:PlainSklearn", "--host", "127.0.0.1", "--port", "{port}"]


def _constant_command(context: Context) -> list[str]:
    return [str(context.python), "-m", "bench.constant", "--port", "{port}"]


def _tensor(columns: list[str], values: list[float]) -> dict[str, Any]:
    return {"inputs": [{"name": "input-0", "shape": [1, len(values)], "datatype": "FP64", "data": values}]}


def _sklearn_pin() -> str:
    import sklearn

    return f"scikit-learn=={sklearn.__version__}"


WIRES: dict[str, Wire] = {
    wire.name: wire
    for wire in (
        Wire(
            "service",
            "/predict",
            _service_command,
            "/readyz",
            body=lambda columns, values: dict(zip(columns, values, strict=True)),
            first_prediction=lambda answer: float(answer["prediction"]),
        ),
        Wire(
            "mlflow",
            "/invocations",
            _mlflow_command,
            "/ping",
            body=lambda columns, values: {"dataframe_split": {"columns": columns, "data": [values]}},
            first_prediction=lambda answer: float(answer["predictions"][0]),
        ),
        Wire(
            "mlserver",
            f"/v2/models/{PEER_MODEL_NAME}/infer",
            _mlserver_command,
            "/v2/health/ready",
            body=_tensor,
            first_prediction=lambda answer: float(answer["outputs"][0]["data"][0]),
            requirements=("mlserver==1.7.1", "mlserver-sklearn==1.7.1"),
            env=_mlserver_env,
            note="MLServer 1.7.1 with parallel_workers 0 (inference in the server process): its parallel "
            "workers fail to start with the current uvloop.",
        ),
        Wire(
            "kserve",
            f"/v1/models/{PEER_MODEL_NAME}:predict",
            _kserve_command,
            f"/v1/models/{PEER_MODEL_NAME}",
            body=lambda columns, values: {"instances": [values]},
            first_prediction=lambda answer: float(answer["predictions"][0]),
            requirements=("kserve==0.21.0",),
        ),
        Wire(
            "bentoml",
            "/predict",
            _bentoml_command,
            "/readyz",
            body=lambda columns, values: {"rows": [values]},
            first_prediction=lambda answer: float(answer[0]),
            requirements=("bentoml==1.4.39",),
            env=lambda context: {"BENCH_MODEL_DIR": str(context.model_dir)},
            cwd=PEER_SERVERS,
            note="A plain idiomatic `@bentoml.api` service, one worker, no validation or metrics.",
        ),
        Wire(
            "constant",
            "/predict",
            _constant_command,
            "/livez",
            body=lambda columns, values: dict(zip(columns, values, strict=True)),
            first_prediction=None,
        ),
    )
}
PEERS = tuple(name for name, wire in WIRES.items() if wire.requirements)


def virtual_environment(name: str, pins: tuple[str, ...]) -> Path:
    """The interpreter of an environment of its own with ``pins``, made by uv the first time, then reused."""
    digest = hashlib.sha256("\n".join(pins).encode()).hexdigest()[:12]
    home = PEER_HOME / f"{name}-{digest}"
    python, complete = home / "bin" / "python", home / ".complete"
    if complete.exists():
        return python
    shutil.rmtree(home, ignore_errors=True)  # a run stopped half-way leaves a partial environment
    uv = shutil.which("uv") or str(PROJECT_ROOT / ".tools" / "bin" / "uv")
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    for command in (
        [uv, "venv", "--quiet", "--python", version, str(home)],
        [uv, "pip", "install", "--quiet", "--python", str(python), *pins],
    ):
        result = subprocess.run(command, capture_output=True, text=True, timeout=900, check=False)  # noqa: S603
        if result.returncode != 0:
            shutil.rmtree(home, ignore_errors=True)
            raise BenchError(f"cannot make the {name} environment: {result.stderr.strip()[-600:]}")
    complete.touch()
    return python


def peer_python(wire: Wire) -> Path:
    """The peer's own environment, with the scikit-learn of ours so the exported model loads unchanged."""
    return virtual_environment(wire.name, (*wire.requirements, _sklearn_pin()))


def export_model(estimator: Any, folder: Path) -> Path:
    """The estimator as the peers load it (joblib), with MLServer's model settings beside it."""
    import joblib

    folder.mkdir(parents=True, exist_ok=True)
    joblib.dump(estimator, folder / MODEL_FILE)
    mlserver = folder / "mlserver"
    mlserver.mkdir(exist_ok=True)
    settings = {
        "name": PEER_MODEL_NAME,
        "implementation": "mlserver_sklearn.SKLearnModel",
        "parameters": {"uri": str(folder / MODEL_FILE)},
    }
    (mlserver / "model-settings.json").write_text(json.dumps(settings), encoding="utf-8")
    return folder
