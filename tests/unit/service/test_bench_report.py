"""The benchmark's arithmetic: percentiles from Locust's histogram, ratios and goal checks."""

from __future__ import annotations

import pytest

from bench.compare import InProcess, RunResult, combine, goals, markdown, percentile

pytestmark = pytest.mark.unit


def result(
    target: str, users: int, rps: float, p99: float = 50, failures: int = 0, p50: float = 2
) -> RunResult:
    return RunResult(
        target, users, requests=1000, failures=failures, rps=rps, p50_ms=p50, p95_ms=p99, p99_ms=p99
    )


def test_percentiles_from_rounded_response_times() -> None:
    counts = {1: 50, 2: 45, 40: 4, 300: 1}
    assert percentile(counts, 0.5) == 1
    assert percentile(counts, 0.95) == 2
    assert percentile(counts, 0.99) == 40
    assert percentile(counts, 1.0) == 300


def test_rounds_combine_to_totals_and_medians() -> None:
    runs = [result("service", 8, 900), result("service", 8, 1000), result("service", 8, 1300, failures=1)]
    combined = combine(runs)
    assert (combined.requests, combined.failures, combined.rps) == (3000, 1, 1000)


def test_goals_met_and_missed() -> None:
    results = [
        result("service", 1, 400, p50=2),
        result("service", 32, 1200, p99=60),
        result("mlflow", 32, 100),
        result("constant", 32, 3000),
    ]
    checks = {name: (met, measured) for name, met, measured in goals(results)}
    assert checks["32 users: >= 10x MLflow throughput"] == (True, "12.0x")
    assert checks["32 users: >= 50% of the constant endpoint"] == (False, "40%")
    assert checks["32 users: p99 <= 100 ms"] == (True, "60 ms")
    assert checks["service: zero errors"] == (True, "0 errors")
    assert checks["1 user: p50 < 5 ms"] == (True, "2.0 ms")
    failing = goals([result("service", 32, 1200, failures=3, p99=150)])
    assert ("service: zero errors", False, "3 errors") in failing
    assert ("32 users: p99 <= 100 ms", False, "150 ms") in failing


def test_markdown_table_lists_every_run_with_ratios() -> None:
    results = [result("service", 32, 1200), result("mlflow", 32, 100), result("constant", 32, 3000)]
    meta: dict[str, object] = {"model": "m v1", "cpus": 2, "machine": "x", "seconds": 20, "rounds": 1}
    table = markdown(results, InProcess(0.2, 0.4, 1000, 9.0), meta)
    assert "| service | 32 | 1,200 | 2 | 50 | 50 | 0 (0.0%) | 12.0x | 40% |" in table
    assert "| constant | 32 | 3,000 |" in table
    assert "9.0 us per row in batches of 1000" in table
