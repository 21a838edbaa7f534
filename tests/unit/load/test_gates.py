"""SLO gate evaluation on known statistics: each gate passes at its limit and breaches just past it."""

import pytest

from load.config import LoadSettings
from load.gates import EndpointStats, RunStats, evaluate_gates

pytestmark = pytest.mark.unit

GATES = LoadSettings(p95_ms=200, p99_ms=500, max_error_rate=0.01, min_rps=50)


def run_stats(
    *,
    requests: int = 1000,
    failures: int = 0,
    p95_ms: float | None = 120,
    p99_ms: float | None = 300,
    rps: float = 80.0,
    top_failure: str | None = None,
    task_exceptions: int = 0,
    top_exception: str | None = None,
) -> RunStats:
    total = EndpointStats(
        method="",
        name="Aggregated",
        requests=requests,
        failures=failures,
        p50_ms=None if p95_ms is None else 20,
        p95_ms=p95_ms,
        p99_ms=p99_ms,
        max_ms=None if p99_ms is None else p99_ms + 50,
        rps=rps,
    )
    return RunStats(
        total=total,
        endpoints=[],
        top_failure=top_failure,
        task_exceptions=task_exceptions,
        top_exception=top_exception,
    )


def verdicts(stats: RunStats) -> dict[str, bool]:
    return {gate.gate: gate.passed for gate in evaluate_gates(stats, GATES)}


def test_healthy_run_passes_every_gate() -> None:
    results = evaluate_gates(run_stats(), GATES)

    assert [gate.gate for gate in results] == [
        "p95_ms",
        "p99_ms",
        "max_error_rate",
        "task_exceptions",
        "min_rps",
    ]
    assert all(gate.passed for gate in results)
    assert [gate.observed for gate in results] == [120, 300, 0.0, 0, 80.0]
    assert results[0].message == "p95 latency 120 ms <= 200 ms"


def test_values_exactly_at_the_limits_pass() -> None:
    stats = run_stats(requests=1000, failures=10, p95_ms=200, p99_ms=500, rps=50.0)

    assert all(verdicts(stats).values())


@pytest.mark.parametrize(
    ("stats", "breached", "message"),
    [
        (run_stats(p95_ms=201), "p95_ms", "p95 latency 201 ms > 200 ms"),
        (run_stats(p99_ms=750), "p99_ms", "p99 latency 750 ms > 500 ms"),
        (run_stats(rps=49.9), "min_rps", "throughput 49.9 req/s < 50 req/s"),
        (
            run_stats(task_exceptions=3, top_exception="KeyError: 'MedInc' (3x)"),
            "task_exceptions",
            "3 exceptions in load-test tasks; most frequent: KeyError: 'MedInc' (3x)",
        ),
        (
            run_stats(failures=11),
            "max_error_rate",
            "error rate 1.10% (11 of 1000 requests) > 1.00%",
        ),
    ],
)
def test_each_gate_breaches_alone(stats: RunStats, breached: str, message: str) -> None:
    results = {gate.gate: gate for gate in evaluate_gates(stats, GATES)}

    assert {name for name, gate in results.items() if not gate.passed} == {breached}
    assert results[breached].message == message


def test_error_rate_breach_names_the_most_frequent_failure() -> None:
    stats = run_stats(failures=400, top_failure="POST /predict: HTTP 503 (400x)")

    error_gate = next(gate for gate in evaluate_gates(stats, GATES) if gate.gate == "max_error_rate")

    assert not error_gate.passed
    assert error_gate.observed == pytest.approx(0.4)
    assert error_gate.message.endswith("most frequent: POST /predict: HTTP 503 (400x)")


def test_a_run_without_requests_breaches_every_slo_gate() -> None:
    results = evaluate_gates(run_stats(requests=0, p95_ms=None, p99_ms=None, rps=0.0), GATES)

    assert {gate.gate for gate in results if not gate.passed} == {
        "p95_ms",
        "p99_ms",
        "max_error_rate",
        "min_rps",
    }
    assert [gate.message for gate in results[:3]] == [
        "p95 latency: no request completed",
        "p99 latency: no request completed",
        "error rate: no request completed",
    ]
