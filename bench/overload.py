"""Overload benchmark: goodput of one worker when closed-loop clients outnumber what it can serve.

Starts the served Bento (one worker; the start-up code of bench/compare.py), then drives it with
``wrk`` (bench/overload.lua) per scenario (single rows, 1,000-row batches, a mix) at the connection
count that saturates it and at 8x and 32x that count, each run for ``--seconds``. Prints and writes a
markdown table: responses/s, goodput (200/s, and rows/s), 503/s, accepted p99, requests left
without an answer within wrk's timeout, RSS before and after, and whether the PIDs stayed the same.

Accepted latency comes from a few probe connections inside each run (one wrk thread each, so every
request's latency is known with its status); wrk's own percentiles mix 200s and 503s.

Several targets (``--target NAME=CHECKOUT[:SETTING=VALUE,...]``: that checkout's service code with
the same model, and extra ``TABULA_SERVICE_*`` settings) are started side by side and measured in
turn at each load, so that a machine whose load drifts treats them alike.

    uv run python -m bench.overload --output reports/overload.md            # the Bento, about 4 minutes
    uv run python -m bench.overload --smoke --output /tmp/overload.md       # proves the script
    uv run python -m bench.overload --target before=/tmp/main --target after=. --output /tmp/compare.md
    uv run python -m bench.overload --scenarios single --target lifo=. \
        --target fifo=.:TABULA_SERVICE_ADMISSION_ORDER=fifo --output /tmp/order.md

Service settings come from the environment (``TABULA_SERVICE_*``), as for ``bentoml serve``.
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Any

import httpx
import psutil
import typer
from prometheus_client.parser import text_string_to_metric_families

from bench.targets import (
    PROJECT_ROOT,
    WIRES,
    BenchError,
    Context,
    Target,
    benchmarked_model,
    child_env,
    started,
)
from load.config import DEFAULT_PAYLOADS_FILE

LUA_SCRIPT = Path(__file__).with_name("overload.lua")
DEFAULT_ROWS = DEFAULT_PAYLOADS_FILE
RESULT_PREFIX = "overload-result "
BATCH_ROWS = 1000
# Probe connections per run (at most half of all): their requests are measured one by one. They
# connect first: a server busy with a crowd may accept new connections slowly (a uvloop server accepts
# one per turn of its loop; ours up to 64 a turn, see service/event_loop.py). 16, not 4: at 32x each probe
# is accepted a few times a second, and 4 gave a "p99" of about 50 samples, in effect their maximum.
PROBES = 16
PROBE_LEAD_SECONDS = 1.0
MB = 1_000_000
# Goals of the issue, checked against the table.
GOAL_GOODPUT_SHARE = 0.9
GOAL_RSS_SHARE = 0.1


@dataclass(frozen=True)
class Scenario:
    name: str
    # Connections that saturate one worker with this traffic (closed loop, no think time).
    saturating: int
    # One batch for every ``singles_per_batch`` single rows; 0: batches only; None: single rows only.
    singles_per_batch: int | None


SCENARIOS = {
    "single": Scenario("single", 32, None),
    "batch": Scenario("batch", 4, 0),
    # A 1,000-row batch costs about 50 single rows: half the work each.
    "mix": Scenario("mix", 32, 50),
}
FACTORS = (1, 8, 32)


@dataclass(frozen=True)
class Plan:
    """What to measure: scenarios, multiples of their saturating connections, run length, wrk timeout."""

    scenarios: list[Scenario]
    factors: list[int]
    seconds: float
    timeout: float
    settle: float
    slo_ms: float


@dataclass(frozen=True)
class TargetSpec:
    """A server to measure: a checkout's service code (None: the Bento) and extra settings."""

    name: str
    source: Path | None
    settings: dict[str, str]

    @classmethod
    def parse(cls, text: str) -> TargetSpec:
        """``NAME=CHECKOUT[:SETTING=VALUE,...]``."""
        name, _, rest = text.partition("=")
        checkout, _, pairs = rest.partition(":")
        if not name or not checkout:
            raise BenchError(f"--target {text!r}: expected NAME=CHECKOUT[:SETTING=VALUE,...]")
        settings = dict(pair.split("=", 1) for pair in pairs.split(",") if "=" in pair)
        unknown = [key for key in settings if not key.startswith("TABULA_SERVICE_")]
        if unknown:
            raise BenchError(f"--target {text!r}: settings must start with TABULA_SERVICE_, not {unknown}")
        return cls(name, Path(checkout).resolve(), settings)

    def describe(self, bento: str | None) -> str:
        settings = " ".join(f"{key}={value}" for key, value in self.settings.items())
        return f"{self.name} = {self.source or bento} {settings}".strip()


@dataclass(frozen=True)
class Run:
    target: str
    scenario: str
    connections: int
    factor: int
    seconds: float
    responses: int
    ok_single: int
    ok_batch: int
    shed: int
    other_status: int
    unanswered: int
    wrk_p99_ms: float
    accepted_p99_ms: float | None
    accepted_max_ms: float | None
    # How many accepted requests the probes timed: at 32x a few dozen, so their p99 is nearly their maximum.
    accepted_samples: int
    # The probes' accepted 1,000-row batches alone: in the mix they are about 2 % of the accepted requests,
    # so the accepted p99 is about their median.
    batch_p50_ms: float | None
    batch_p99_ms: float | None
    shed_p50_ms: float | None
    rss_before_mb: float
    rss_after_mb: float
    same_pids: bool
    # Answers the service itself counted as its faults (5xx but the shed 503) during the run: wrk sees
    # only what reached it, and a fault answered to a client that had gone reaches nobody.
    faults: int

    @property
    def goodput(self) -> float:
        return (self.ok_single + self.ok_batch) / self.seconds

    @property
    def rows_per_second(self) -> float:
        return (self.ok_single + BATCH_ROWS * self.ok_batch) / self.seconds


app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


def request_lines(scenario: Scenario, rows: list[dict[str, float]]) -> list[str]:
    """The scenario's requests, one ``<path> <body>`` line each, in the order wrk sends them."""
    singles = [f"/predict {json.dumps(row)}" for row in rows]
    repeated = rows * (1 + BATCH_ROWS // len(rows))
    batches = [
        f"/predict/batch {json.dumps({'rows': repeated[start : start + BATCH_ROWS]})}"
        for start in range(0, len(rows), max(1, len(rows) // 5))
    ]
    if scenario.singles_per_batch is None:
        return singles
    if scenario.singles_per_batch == 0:
        return batches
    lines: list[str] = []
    for index, batch in enumerate(batches):
        start = index * scenario.singles_per_batch
        lines += [singles[(start + i) % len(singles)] for i in range(scenario.singles_per_batch)]
        lines.append(batch)
    return lines


def wrk_command(
    wrk: str, url: str, requests_file: Path, connections: int, seconds: float, timeout: float, probe: bool
) -> list[str]:
    """The crowd (two threads), or probes: a thread per connection, counting after PROBE_LEAD_SECONDS."""
    threads = connections if probe else min(2, connections)
    probe_args = ["probe", str(round(PROBE_LEAD_SECONDS * 1000))] if probe else []
    duration = seconds + PROBE_LEAD_SECONDS if probe else seconds
    return [
        wrk, f"-t{threads}", f"-c{connections}", f"-d{duration:g}s", f"--timeout={timeout:g}s",
        "-s", str(LUA_SCRIPT), url, "--", str(requests_file), *probe_args,
    ]  # fmt: skip


def parse_result(output: str) -> dict[str, Any]:
    line = next((line for line in output.splitlines() if line.startswith(RESULT_PREFIX)), None)
    if line is None:
        raise BenchError(f"wrk printed no result: {output.strip()[-800:]}")
    result: dict[str, Any] = json.loads(line.removeprefix(RESULT_PREFIX))
    return result


def run_wrk(command: list[str], seconds: float) -> dict[str, Any]:
    completed = subprocess.run(  # noqa: S603 - fixed wrk binary and arguments
        command, capture_output=True, text=True, timeout=seconds + 60, check=False
    )
    if completed.returncode != 0:
        raise BenchError(
            f"{shlex.join(command)} failed ({completed.returncode}): {completed.stderr.strip()[-800:]}"
        )
    return parse_result(completed.stdout)


def counted_statuses(url: str) -> Counter[str]:
    """The service's own ``tabula_http_requests_total``, by status code."""
    counted: Counter[str] = Counter()
    text = httpx.get(f"{url}/metrics", timeout=10).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "tabula_http_requests_total":
                counted[sample.labels["status_code"]] += int(sample.value)
    return counted


def faults(counted: Counter[str]) -> int:
    """Answers counted under 5xx status codes other than 503 (shed): the service's own faults."""
    return sum(n for status, n in counted.items() if status.startswith("5") and status != "503")


def tree(pid: int) -> list[psutil.Process]:
    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


def tree_rss(pid: int) -> int:
    total = 0
    for process in tree(pid):
        try:
            total += process.memory_info().rss
        except psutil.NoSuchProcess:
            continue
    return total


def measure(
    wrk: str,
    name: str,
    target: Target,
    scenario: Scenario,
    requests_file: Path,
    factor: int,
    plan: Plan,
) -> Run:
    """One run: the crowd and the probes side by side; RSS and PIDs before it and after it settled."""
    if target.process is None:
        raise BenchError("the benchmark needs the server process it started")
    connections = scenario.saturating * factor
    probes = min(PROBES, connections // 2)
    pids = {p.pid for p in tree(target.process.pid)}
    rss_before = tree_rss(target.process.pid)
    faults_before = faults(counted_statuses(target.url))
    commands = [
        wrk_command(
            wrk, target.url, requests_file, connections - probes, plan.seconds, plan.timeout, probe=False
        ),
        wrk_command(wrk, target.url, requests_file, probes, plan.seconds, plan.timeout, probe=True),
    ]
    with ThreadPoolExecutor(max_workers=1) as pool:
        probing = pool.submit(run_wrk, commands[1], plan.seconds + PROBE_LEAD_SECONDS)
        time.sleep(PROBE_LEAD_SECONDS)
        crowd = run_wrk(commands[0], plan.seconds)
        probe = probing.result()
    time.sleep(plan.settle)
    rss_after = tree_rss(target.process.pid)
    same_pids = {p.pid for p in tree(target.process.pid)} == pids
    faults_during = faults(counted_statuses(target.url)) - faults_before
    statuses: dict[str, int] = {}
    for result in (crowd, probe):
        for key, count in result["statuses"].items():
            statuses[key] = statuses.get(key, 0) + int(count)
    unanswered = sum(
        int(result["errors"][kind])
        for result in (crowd, probe)
        for kind in ("timeout", "connect", "read", "write")
    )
    by_status = probe.get("latency_by_status") or {}
    accepted = by_status.get("accepted") or {}
    batches = by_status.get("batch") or {}
    shed = by_status.get("503") or {}
    responses = sum(statuses.values())
    ok_single, ok_batch, shed_count = (
        statuses.get("200", 0),
        statuses.get("200 batch", 0),
        statuses.get("503", 0),
    )
    return Run(
        target=name,
        scenario=scenario.name,
        connections=connections,
        factor=factor,
        seconds=crowd["duration_us"] / 1e6,
        responses=responses,
        ok_single=ok_single,
        ok_batch=ok_batch,
        shed=shed_count,
        other_status=responses - ok_single - ok_batch - shed_count,
        unanswered=unanswered,
        wrk_p99_ms=crowd["latency_p99_us"] / 1000,
        accepted_p99_ms=accepted.get("p99_ms"),
        accepted_max_ms=accepted.get("max_ms"),
        accepted_samples=int(accepted.get("samples", 0)),
        batch_p50_ms=batches.get("p50_ms"),
        batch_p99_ms=batches.get("p99_ms"),
        shed_p50_ms=shed.get("p50_ms"),
        rss_before_mb=rss_before / MB,
        rss_after_mb=rss_after / MB,
        same_pids=same_pids,
        faults=faults_during,
    )


def markdown(runs: list[Run], meta: dict[str, object], slo_ms: float) -> str:
    lines = [
        (
            f"Overload of {meta['model']}, one worker, {meta['cpus']} CPUs ({meta['machine']}); "
            f"wrk on the same machine, closed loop, {meta['seconds']} s a run, timeout {meta['timeout']} s; "
            f"settings {meta['settings'] or 'defaults'}; targets: {meta['targets']}."
        ),
        "",
        (
            "| code | traffic | connections | responses/s | goodput 200/s | rows/s | 503/s | accepted p99 "
            "| wrk p99 (all) | 503 p50 | unanswered | RSS before -> after | same PIDs |"
        ),
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for run in sorted(runs, key=lambda r: (r.scenario, r.target, r.factor)):
        accepted = f"{run.accepted_p99_ms:g} ms" if run.accepted_p99_ms is not None else "-"
        shed = f"{run.shed_p50_ms:g} ms" if run.shed_p50_ms is not None else "-"
        lines.append(
            f"| {run.target} | {run.scenario} | {run.connections} ({run.factor}x) "
            f"| {run.responses / run.seconds:,.0f} "
            f"| {run.goodput:,.0f} | {run.rows_per_second:,.0f} | {run.shed / run.seconds:,.0f} | {accepted} "
            f"| {run.wrk_p99_ms:,.0f} ms | {shed} | {run.unanswered} "
            f"| {run.rss_before_mb:.0f} -> {run.rss_after_mb:.0f} MB | {'yes' if run.same_pids else 'no'} |"
        )
    lines += ["", "| goal | met | measured |", "|---|---|---|"]
    lines += [
        f"| {name} | {'yes' if met else 'no'} | {measured} |" for name, met, measured in goals(runs, slo_ms)
    ]
    return "\n".join(lines) + "\n"


def goals(runs: list[Run], slo_ms: float) -> list[tuple[str, bool, str]]:
    """The issue's goals per scenario: goodput share, accepted p99 within the SLO, every request answered."""
    checks: list[tuple[str, bool, str]] = []
    for target, scenario in dict.fromkeys((run.target, run.scenario) for run in runs):
        name = f"{target} {scenario}"
        of_scenario = [run for run in runs if (run.target, run.scenario) == (target, scenario)]
        base = next((run for run in of_scenario if run.factor == 1), None)
        for run in of_scenario:
            if run.factor == 1 or base is None or base.rows_per_second == 0:
                continue
            share = run.rows_per_second / base.rows_per_second
            checks.append(
                (
                    f"{name} {run.factor}x: goodput >= 90% of saturated",
                    share >= GOAL_GOODPUT_SHARE,
                    f"{share:.0%}",
                )
            )
            p99 = run.accepted_p99_ms
            checks.append(
                (
                    f"{name} {run.factor}x: accepted p99 <= {slo_ms:g} ms",
                    p99 is not None and p99 <= slo_ms,
                    f"{p99:g} ms" if p99 is not None else "no accepted probe request",
                )
            )
        unanswered = sum(run.unanswered for run in of_scenario)
        checks.append((f"{name}: every request answered", unanswered == 0, f"{unanswered} unanswered"))
        first, last = of_scenario[0], of_scenario[-1]
        grown = last.rss_after_mb / first.rss_before_mb - 1
        checks.append((f"{name}: RSS back within 10%", grown <= GOAL_RSS_SHARE, f"{grown:+.1%}"))
        checks.append((f"{name}: same PIDs", all(run.same_pids for run in of_scenario), ""))
        counted = sum(run.faults for run in of_scenario)
        checks.append((f"{name}: no fault counted by the service", counted == 0, f"{counted} counted"))
    return checks


def serve_command(source: Path | None, bento: str | None, model_tag: str) -> tuple[list[str], str]:
    """``bentoml serve`` of the Bento, or of the service code of another checkout with the same model."""
    if source is None:
        service = WIRES["service"]
        context = Context(bento, model_name="", model_version="", model_dir=Path())
        return service.command(context), service.health
    command = [sys.executable, "-m", "bentoml", "serve", "service.service:TabulaService"]
    command += ["--working-dir", str(source), "--arg", f"model_tag={model_tag}"]
    return [*command, "--host", "127.0.0.1", "--port", "{port}"], "/readyz"


@app.command()
def main(
    output: Annotated[Path, typer.Option(help="Markdown table to write; the JSON goes beside it (.json).")],
    model_name: Annotated[
        str, typer.Option(envvar="TABULA_MODEL_NAME", help="Registered model.")
    ] = "housing-price",
    ref: Annotated[str, typer.Option(help="Alias or version of the model.")] = "production",
    bento: Annotated[str | None, typer.Option(help="Serve this built Bento instead of building one.")] = None,
    target: Annotated[
        list[str] | None,
        typer.Option(help="NAME=CHECKOUT[:TABULA_SERVICE_X=VALUE,...]; repeat to compare side by side."),
    ] = None,
    scenarios: Annotated[str, typer.Option(help="Comma-separated subset of single,batch,mix.")] = ",".join(
        SCENARIOS
    ),
    factors: Annotated[str, typer.Option(help="Multiples of the saturating connection count.")] = ",".join(
        str(f) for f in FACTORS
    ),
    seconds: Annotated[float, typer.Option(min=1, help="Duration of each wrk run.")] = 12,
    timeout: Annotated[float, typer.Option(help="wrk's timeout: slower answers count as unanswered.")] = 2.0,
    settle: Annotated[float, typer.Option(help="Idle seconds after a run before RSS is read.")] = 5.0,
    slo_ms: Annotated[float, typer.Option(help="Latency objective of accepted requests.")] = 250.0,
    rows_file: Annotated[Path, typer.Option(help="Request rows (payloads JSON).")] = DEFAULT_ROWS,
    smoke: Annotated[bool, typer.Option(help="Two seconds per run at 1x and 8x: proves the script.")] = False,
) -> None:
    """Measure goodput under a closed-loop crowd at 1x, 8x and 32x the saturating connections."""
    if smoke:
        factors, seconds, settle = "1,8", 2, 1
    try:
        wrk = shutil.which("wrk")
        if wrk is None:
            raise BenchError("wrk is not installed (Debian: apt-get install wrk; `./run setup` installs it)")
        chosen = [SCENARIOS[name.strip()] for name in scenarios.split(",") if name.strip() in SCENARIOS]
        if not chosen:
            raise BenchError(f"choose scenarios from {', '.join(SCENARIOS)}")
        multiples = sorted({int(part) for part in factors.split(",")})
        plan = Plan(chosen, multiples, seconds, timeout, settle, slo_ms)
        specs = [TargetSpec.parse(text) for text in target or []] or [TargetSpec("service", None, {})]
        if len({spec.name for spec in specs}) < len(specs):
            raise BenchError("give each --target its own name")
        report = run(output, wrk, model_name, ref, bento, specs, rows_file, plan)
    except (BenchError, ValueError) as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(1) from None
    typer.echo(report)


def run(
    output: Path,
    wrk: str,
    model_name: str,
    ref: str,
    bento: str | None,
    specs: list[TargetSpec],
    rows_file: Path,
    plan: Plan,
) -> str:
    from load.payloads import read_rows

    rows = read_rows(rows_file)
    served = benchmarked_model(model_name, ref, bento, build=any(spec.source is None for spec in specs))
    model_tag, bento = served.model_tag, served.bento
    runs: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="tabula-overload-") as scratch_name, ExitStack() as stack:
        scratch = Path(scratch_name)
        targets: dict[str, Target] = {}
        for spec in specs:
            command, health = serve_command(spec.source, bento, model_tag)
            targets[spec.name] = stack.enter_context(
                started(spec.name, command, health, scratch, child_env(spec.settings),
                        cwd=spec.source or PROJECT_ROOT)
            )  # fmt: skip
        for scenario in plan.scenarios:
            requests_file = scratch / f"{scenario.name}.txt"
            requests_file.write_text("\n".join(request_lines(scenario, rows)) + "\n", encoding="utf-8")
            for server in targets.values():
                # Warm-up: caches, pools and the cost model to fill.
                warm_up = wrk_command(
                    wrk, server.url, requests_file, scenario.saturating, 3, plan.timeout, False
                )
                run_wrk(warm_up, 3)
            for factor in plan.factors:
                for name, server in targets.items():  # in turn at the same load
                    runs.append(measure(wrk, name, server, scenario, requests_file, factor, plan))
                    typer.echo(f"{runs[-1]}", err=True)
            for name, server in targets.items():
                if httpx.get(f"{server.url}/readyz", timeout=10).status_code != 200:
                    raise BenchError(f"{name} is not ready after the {scenario.name} runs")
    meta: dict[str, object] = {
        "cpus": os.cpu_count(),
        "machine": f"{platform.system()} {platform.machine()}, Python {platform.python_version()}",
        "seconds": plan.seconds,
        "timeout": plan.timeout,
        "model": f"{served.name} v{served.version}",
        "targets": "; ".join(spec.describe(bento) for spec in specs),
        "settings": ", ".join(
            f"{k}={v}" for k, v in sorted(os.environ.items()) if k.startswith("TABULA_SERVICE_")
        ),
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    table = markdown(runs, meta, plan.slo_ms)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(table, encoding="utf-8")
    document = {
        "meta": meta,
        "runs": [{**asdict(r), "goodput": r.goodput, "rows_per_second": r.rows_per_second} for r in runs],
        "goals": [
            {"goal": name, "met": met, "measured": value} for name, met, value in goals(runs, plan.slo_ms)
        ],
    }
    output.with_suffix(".json").write_text(json.dumps(document, indent=2), encoding="utf-8")
    return table


if __name__ == "__main__":
    app()
