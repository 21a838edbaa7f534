"""Side-by-side benchmark of the prediction service on one machine, with one command.

Starts (a) this service via ``bentoml serve``, (b) MLflow's scoring server (``mlflow models serve``)
for the same model version and (c) a bare Starlette/uvicorn endpoint returning a constant (the
transport ceiling); drives each with the same Locust ``FastHttpUser`` workload (single rows from
the test split, no think time) at several user counts, targets interleaved; times (d) the bare
in-process predict call; and writes the results as JSON and as a markdown table.

    uv run python -m bench.compare --output reports/bench.md      # full run, several minutes
    uv run python -m bench.compare --smoke --output /tmp/bench.md   # seconds per run, proves the script
"""

from __future__ import annotations

import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated

import httpx
import typer

from load.config import DEFAULT_PAYLOADS_FILE

PROJECT_ROOT = Path(__file__).resolve().parent.parent
LOCUSTFILE = Path(__file__).with_name("locustfile.py")
DEFAULT_ROWS = DEFAULT_PAYLOADS_FILE
TARGETS = ("service", "mlflow", "constant")
# Goals of the service at the highest user count, from the issue.
GOAL_VS_MLFLOW = 10.0
GOAL_VS_CEILING = 0.5
GOAL_P99_MS = 100.0
GOAL_SINGLE_USER_P50_MS = 5.0

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


class BenchError(RuntimeError):
    """A benchmark that cannot run; printed as one line."""


@dataclass(frozen=True)
class RunResult:
    target: str
    users: int
    requests: int
    failures: int
    rps: float
    p50_ms: float
    p95_ms: float
    p99_ms: float

    @property
    def error_rate(self) -> float:
        return self.failures / self.requests if self.requests else 1.0


@dataclass(frozen=True)
class InProcess:
    single_row_p50_ms: float
    single_row_p99_ms: float
    batch_rows: int
    batch_us_per_row: float


@dataclass
class Target:
    name: str
    url: str
    process: subprocess.Popen[bytes] | None
    log_path: Path | None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {**os.environ, **(extra or {})}
    # `mlflow models serve --env-manager local` starts `uvicorn` by name.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


@contextmanager
def started(
    name: str, command: list[str], health_path: str, logs: Path, env: dict[str, str], cwd: Path = PROJECT_ROOT
) -> Iterator[Target]:
    """Start a server in its own process group, wait until ``health_path`` answers 200, stop it at the end."""
    port = free_port()
    log_path = logs / f"{name}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(  # noqa: S603 - fixed interpreter and arguments
            [part.replace("{port}", str(port)) for part in command],
            cwd=cwd,
            env=env,
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


def run_locust(target: Target, users: int, seconds: int, rows_path: Path, scratch: Path) -> RunResult:
    prefix = scratch / f"{target.name}-{users}-{time.monotonic_ns()}"
    command = [
        sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "--only-summary",
        "--users", str(users), "--spawn-rate", str(users), "--run-time", f"{seconds}s",
        "--host", target.url, "--json-file", str(prefix), "--loglevel", "WARNING", "--stop-timeout", "5",
    ]  # fmt: skip
    env = child_env({"HOUSING_BENCH_KIND": target.name, "HOUSING_BENCH_ROWS": str(rows_path)})
    result = subprocess.run(  # noqa: S603 - fixed interpreter and arguments
        command, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=seconds + 120, check=False
    )
    stats_path = Path(f"{prefix}.json")
    entries = json.loads(stats_path.read_text(encoding="utf-8")) if stats_path.exists() else []
    # Locust's final statistics (the same as its printed summary), one entry per request name.
    entry = next((e for e in entries if e["name"] == "predict"), None)
    if entry is None or entry["num_requests"] == 0:
        detail = result.stderr.strip()[-800:]
        raise BenchError(f"locust sent no request to {target.name} at {users} users: {detail}")
    counts = {int(float(ms)): n for ms, n in entry["response_times"].items()}
    elapsed = max(entry["last_request_timestamp"] - entry["start_time"], 1e-9)
    return RunResult(
        target=target.name,
        users=users,
        requests=entry["num_requests"],
        failures=entry["num_failures"],
        rps=entry["num_requests"] / elapsed,
        p50_ms=percentile(counts, 0.50),
        p95_ms=percentile(counts, 0.95),
        p99_ms=percentile(counts, 0.99),
    )


def percentile(counts: dict[int, int], share: float) -> float:
    """Smallest response time (Locust rounds to whole ms below 100 ms) covering ``share`` of requests."""
    total = sum(counts.values())
    covered = 0
    for ms in sorted(counts):
        covered += counts[ms]
        if covered >= share * total:
            return float(ms)
    return float(max(counts))


def combine(runs: list[RunResult]) -> RunResult:
    """Several rounds of one target and user count: totals for counts, medians for rates and latencies."""
    return RunResult(
        target=runs[0].target,
        users=runs[0].users,
        requests=sum(r.requests for r in runs),
        failures=sum(r.failures for r in runs),
        rps=statistics.median(r.rps for r in runs),
        p50_ms=statistics.median(r.p50_ms for r in runs),
        p95_ms=statistics.median(r.p95_ms for r in runs),
        p99_ms=statistics.median(r.p99_ms for r in runs),
    )


def measure_in_process(model_tag: str, rows: list[dict[str, float]], calls: int) -> InProcess:
    """The bare predict call, through the service's own prediction thread and settings."""
    import bentoml
    import numpy as np

    from service.model import ModelInfo, load_model_dir, prediction_executor

    stored = bentoml.models.get(model_tag)
    model = load_model_dir(Path(stored.path), ModelInfo.from_metadata(dict(stored.info.metadata), model_tag))
    matrix = np.array([[row[name] for name in model.feature_names] for row in rows], dtype=np.float64)
    executor = prediction_executor(1)
    try:
        executor.submit(model.predict, matrix[:1]).result()  # warm-up
        durations = []
        for i in range(calls):
            one = matrix[i % len(matrix)][None, :]
            began = time.perf_counter()
            executor.submit(model.predict, one).result()
            durations.append(time.perf_counter() - began)
        batch = np.resize(matrix, (1000, matrix.shape[1]))
        began = time.perf_counter()
        repeats = max(3, calls // 100)
        for _ in range(repeats):
            executor.submit(model.predict, batch).result()
        per_row = (time.perf_counter() - began) / repeats / batch.shape[0]
    finally:
        executor.shutdown()
    durations.sort()
    return InProcess(
        single_row_p50_ms=durations[len(durations) // 2] * 1000,
        single_row_p99_ms=durations[min(len(durations) - 1, int(len(durations) * 0.99))] * 1000,
        batch_rows=batch.shape[0],
        batch_us_per_row=per_row * 1e6,
    )


def goals(results: list[RunResult]) -> list[tuple[str, bool, str]]:
    """The issue's performance goals, checked against the measured results."""
    by_key = {(r.target, r.users): r for r in results}
    top = max(r.users for r in results)
    low = min(r.users for r in results)
    checks: list[tuple[str, bool, str]] = []
    service = by_key.get(("service", top))
    if service is None:
        return checks
    if (mlflow := by_key.get(("mlflow", top))) and mlflow.rps > 0:
        ratio = service.rps / mlflow.rps
        checks.append(
            (
                f"{top} users: >= {GOAL_VS_MLFLOW:.0f}x MLflow throughput",
                ratio >= GOAL_VS_MLFLOW,
                f"{ratio:.1f}x",
            )
        )
    if (ceiling := by_key.get(("constant", top))) and ceiling.rps > 0:
        share = service.rps / ceiling.rps
        checks.append(
            (
                f"{top} users: >= {GOAL_VS_CEILING:.0%} of the constant endpoint",
                share >= GOAL_VS_CEILING,
                f"{share:.0%}",
            )
        )
    checks.append(
        (
            f"{top} users: p99 <= {GOAL_P99_MS:.0f} ms",
            service.p99_ms <= GOAL_P99_MS,
            f"{service.p99_ms:.0f} ms",
        )
    )
    errors = sum(r.failures for r in results if r.target == "service")
    checks.append(("service: zero errors", errors == 0, f"{errors} errors"))
    if single := by_key.get(("service", low)):
        checks.append(
            (
                f"{low} user: p50 < {GOAL_SINGLE_USER_P50_MS:.0f} ms",
                single.p50_ms < GOAL_SINGLE_USER_P50_MS,
                f"{single.p50_ms:.1f} ms",
            )
        )
    return checks


def markdown(results: list[RunResult], in_process: InProcess | None, meta: dict[str, object]) -> str:
    by_key = {(r.target, r.users): r for r in results}
    header = (
        f"Benchmark of {meta['model']} on {meta['cpus']} CPUs ({meta['machine']}), "
        f"{meta['seconds']} s per run, {meta['rounds']} round(s); Locust FastHttpUser on the same machine, "
        "single rows from the test split."
    )
    lines = [
        header,
        "",
        "| target | users | req/s | p50 ms | p95 ms | p99 ms | errors | vs MLflow | vs constant |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in sorted(results, key=lambda r: (r.users, TARGETS.index(r.target))):
        mlflow = by_key.get(("mlflow", r.users))
        ceiling = by_key.get(("constant", r.users))
        vs_mlflow = f"{r.rps / mlflow.rps:.1f}x" if mlflow and mlflow.rps else "-"
        vs_ceiling = f"{r.rps / ceiling.rps:.0%}" if ceiling and ceiling.rps else "-"
        lines.append(
            f"| {r.target} | {r.users} | {r.rps:,.0f} | {r.p50_ms:g} | {r.p95_ms:g} | {r.p99_ms:g} "
            f"| {r.failures} ({r.error_rate:.1%}) | {vs_mlflow} | {vs_ceiling} |"
        )
    if in_process is not None:
        lines += [
            "",
            (
                f"In-process predict (d): one row p50 {in_process.single_row_p50_ms:.3f} ms "
                f"(p99 {in_process.single_row_p99_ms:.3f} ms); {in_process.batch_us_per_row:.1f} us per row "
                f"in batches of {in_process.batch_rows}."
            ),
        ]
    checks = goals(results)
    if checks:
        lines += ["", "| goal | met | measured |", "|---|---|---|"]
        lines += [f"| {name} | {'yes' if met else 'no'} | {measured} |" for name, met, measured in checks]
    return "\n".join(lines) + "\n"


@app.command()
def main(
    output: Annotated[Path, typer.Option(help="Markdown table to write; the JSON goes beside it (.json).")],
    model_name: Annotated[
        str, typer.Option(envvar="HOUSING_MODEL_NAME", help="Registered model.")
    ] = "housing-price",
    ref: Annotated[str, typer.Option(help="Alias or version of the model to benchmark.")] = "production",
    bento: Annotated[str | None, typer.Option(help="Serve this built Bento instead of building one.")] = None,
    service_url: Annotated[
        str | None, typer.Option(help="Benchmark an already running service instead of starting one.")
    ] = None,
    rows_file: Annotated[
        Path, typer.Option(help="Request rows (payloads or golden-set JSON).")
    ] = DEFAULT_ROWS,
    users: Annotated[str, typer.Option(help="Comma-separated concurrent user counts.")] = "1,8,32",
    seconds: Annotated[int, typer.Option(min=1, help="Duration of each Locust run.")] = 20,
    rounds: Annotated[
        int, typer.Option(min=1, help="Interleaved rounds over all targets and user counts.")
    ] = 1,
    targets: Annotated[
        str, typer.Option(help="Comma-separated subset of service,mlflow,constant.")
    ] = ",".join(TARGETS),
    in_process_calls: Annotated[int, typer.Option(min=10, help="Single-row calls timed in process.")] = 2000,
    smoke: Annotated[
        bool, typer.Option(help="A few seconds per run at 1 and 4 users: proves the script works.")
    ] = False,
) -> None:
    """Benchmark the service against MLflow's scoring server and a constant endpoint."""
    if smoke:
        users, seconds, rounds, in_process_calls = "1,4", 2, 1, 200
    try:
        user_counts = sorted({int(part) for part in users.split(",")})
        chosen = [part.strip() for part in targets.split(",") if part.strip()]
        unknown = set(chosen) - set(TARGETS)
        if unknown or not chosen:
            raise BenchError(f"unknown targets {sorted(unknown)}; choose from {', '.join(TARGETS)}")
        report = run(
            output,
            model_name,
            ref,
            bento,
            service_url,
            rows_file,
            user_counts,
            seconds,
            rounds,
            chosen,
            in_process_calls,
        )
    except (BenchError, ValueError) as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(1) from None
    typer.echo(report)


def run(
    output: Path,
    model_name: str,
    ref: str,
    bento: str | None,
    service_url: str | None,
    rows_file: Path,
    user_counts: list[int],
    seconds: int,
    rounds: int,
    chosen: list[str],
    in_process_calls: int,
) -> str:
    from load.payloads import read_rows
    from service.packaging import PackagingError, build_bento_from_store, import_model, resolve

    tracking_uri = os.environ.get("MLFLOW_TRACKING_URI")
    rows = read_rows(rows_file)
    try:
        resolved = resolve(model_name, ref, tracking_uri)
        model_tag = import_model(resolved, tracking_uri)
        if "service" in chosen and service_url is None and bento is None:
            bento = build_bento_from_store(model_tag, resolved.version, None)
    except PackagingError as error:
        raise BenchError(str(error)) from error
    with tempfile.TemporaryDirectory(prefix="housing-bench-") as scratch_name, ExitStack() as servers:
        scratch = Path(scratch_name)
        rows_path = scratch / "rows.json"
        rows_path.write_text(json.dumps(rows), encoding="utf-8")
        live: list[Target] = []
        for name in chosen:
            if name == "service" and service_url is not None:
                live.append(Target("service", service_url.rstrip("/"), None, None))
                continue
            command, health = server_command(name, bento, model_name, resolved.version)
            live.append(servers.enter_context(started(name, command, health, scratch, child_env())))
        measured: dict[tuple[str, int], list[RunResult]] = {}
        for _ in range(rounds):
            for count in user_counts:
                for target in live:  # interleaved: each target in turn at the same load
                    measured.setdefault((target.name, count), []).append(
                        run_locust(target, count, seconds, rows_path, scratch)
                    )
    results = [combine(runs) for runs in measured.values()]
    in_process = measure_in_process(model_tag, rows, in_process_calls)
    meta: dict[str, object] = {
        "cpus": os.cpu_count(),
        "machine": f"{platform.system()} {platform.machine()}, Python {platform.python_version()}",
        "seconds": seconds,
        "rounds": rounds,
        "model": f"{resolved.name} v{resolved.version}",
        "bento": bento,
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    table = markdown(results, in_process, meta)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(table, encoding="utf-8")
    document = {
        "meta": meta,
        "results": [{**asdict(r), "error_rate": r.error_rate} for r in results],
        "in_process": asdict(in_process),
        "goals": [{"goal": name, "met": met, "measured": value} for name, met, value in goals(results)],
    }
    output.with_suffix(".json").write_text(json.dumps(document, indent=2), encoding="utf-8")
    return table


def server_command(name: str, bento: str | None, model_name: str, version: str) -> tuple[list[str], str]:
    """Command line (with ``{port}``) and health path of a target server."""
    if name == "service":
        if bento is None:
            raise BenchError("no Bento to serve")
        return [
            sys.executable,
            "-m",
            "bentoml",
            "serve",
            bento,
            "--host",
            "127.0.0.1",
            "--port",
            "{port}",
        ], "/readyz"
    if name == "mlflow":
        return [
            sys.executable, "-m", "mlflow", "models", "serve", "-m", f"models:/{model_name}/{version}",
            "--env-manager", "local", "--host", "127.0.0.1", "--port", "{port}", "--workers", "1",
        ], "/ping"  # fmt: skip
    return [sys.executable, "-m", "bench.constant", "--port", "{port}"], "/livez"


if __name__ == "__main__":
    app()
