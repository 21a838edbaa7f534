"""SLO gates over the final statistics of a Locust run: judge them, describe each breach in one line.

The locustfile writes those statistics (``RunStats``) when Locust quits, from its in-memory
stats; Locust's CSV files are refreshed only once a second and can miss the last requests.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from load.config import LoadSettings

# File in the output folder where the locustfile leaves the RunStats of a run.
RUN_STATS_FILE = "run_stats.json"


class EndpointStats(BaseModel):
    """Locust's statistics of one request name, or of all of them together ('Aggregated')."""

    model_config = ConfigDict(frozen=True)

    method: str = Field(description="HTTP method; empty for the aggregate row.")
    name: str = Field(description="Request name (the path), or 'Aggregated'.")
    requests: int = Field(ge=0, description="Requests completed, failed ones included.")
    failures: int = Field(ge=0, description="Requests Locust counted as failed.")
    p50_ms: float | None = Field(description="Median latency in ms; None without requests.")
    p95_ms: float | None = Field(description="95th percentile latency in ms; None without requests.")
    p99_ms: float | None = Field(description="99th percentile latency in ms; None without requests.")
    max_ms: float | None = Field(description="Slowest request in ms; None without requests.")
    rps: float = Field(ge=0, description="Requests per second over the run.")

    @property
    def error_rate(self) -> float | None:
        return self.failures / self.requests if self.requests else None


class RunStats(BaseModel):
    """Final statistics of a run, as the locustfile records them on quitting."""

    model_config = ConfigDict(frozen=True)

    total: EndpointStats = Field(description="All requests together.")
    endpoints: list[EndpointStats] = Field(description="One entry per request name.")
    top_failure: str | None = Field(description="The most frequent failure, if any request failed.")
    task_exceptions: int = Field(default=0, ge=0, description="Exceptions raised inside Locust tasks.")
    top_exception: str | None = Field(default=None, description="The most frequent task exception, if any.")


class GateResult(BaseModel):
    """The verdict of one SLO gate."""

    model_config = ConfigDict(frozen=True)

    gate: str = Field(description="Gate name: its setting, e.g. 'p95_ms' for --p95-ms.")
    threshold: float = Field(description="The configured limit.")
    observed: float | None = Field(description="The measured value; None when nothing was measured.")
    passed: bool
    message: str = Field(description="One readable line saying what was measured against what.")


def _latency_gate(gate: str, label: str, observed: float | None, limit: float) -> GateResult:
    if observed is None:
        return GateResult(
            gate=gate, threshold=limit, observed=None, passed=False, message=f"{label}: no request completed"
        )
    passed = observed <= limit
    relation = "<=" if passed else ">"
    return GateResult(
        gate=gate,
        threshold=limit,
        observed=observed,
        passed=passed,
        message=f"{label} {observed:g} ms {relation} {limit:g} ms",
    )


def evaluate_gates(stats: RunStats, settings: LoadSettings) -> list[GateResult]:
    """Judge the aggregate statistics of a run against every SLO gate of ``settings``."""
    total = stats.total
    gates = [
        _latency_gate("p95_ms", "p95 latency", total.p95_ms, settings.p95_ms),
        _latency_gate("p99_ms", "p99 latency", total.p99_ms, settings.p99_ms),
    ]
    error_rate = total.error_rate
    if error_rate is None:
        gates.append(
            GateResult(
                gate="max_error_rate",
                threshold=settings.max_error_rate,
                observed=None,
                passed=False,
                message="error rate: no request completed",
            )
        )
    else:
        passed = error_rate <= settings.max_error_rate
        message = (
            f"error rate {error_rate:.2%} ({total.failures} of {total.requests} requests) "
            f"{'<=' if passed else '>'} {settings.max_error_rate:.2%}"
        )
        if not passed and stats.top_failure:
            message += f"; most frequent: {stats.top_failure}"
        gates.append(
            GateResult(
                gate="max_error_rate",
                threshold=settings.max_error_rate,
                observed=error_rate,
                passed=passed,
                message=message,
            )
        )
    # A task that raises sends no request, so its failures would be missing from the error rate.
    gates.append(
        GateResult(
            gate="task_exceptions",
            threshold=0,
            observed=stats.task_exceptions,
            passed=stats.task_exceptions == 0,
            message=f"{stats.task_exceptions} exceptions in load-test tasks"
            + (f"; most frequent: {stats.top_exception}" if stats.top_exception else ""),
        )
    )
    rps_passed = total.rps >= settings.min_rps
    gates.append(
        GateResult(
            gate="min_rps",
            threshold=settings.min_rps,
            observed=total.rps,
            passed=rps_passed,
            message=(
                f"throughput {total.rps:.1f} req/s {'>=' if rps_passed else '<'} {settings.min_rps:g} req/s"
            ),
        )
    )
    return gates
