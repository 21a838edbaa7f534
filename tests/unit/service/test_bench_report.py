"""The benchmark's arithmetic: percentiles from Locust's histogram, ratios and goal checks."""

from __future__ import annotations

import pytest

from bench.compare import InProcess, RunResult, combine, goals, markdown, percentile

pytestmark = pytest.mark.unit


def result(
    target: str,
    connections: int,
    rps: float,
    p99: float = 5,
    failures: int = 0,
    p50: float = 2,
    tool: str = "wrk",
) -> RunResult:
    return RunResult(
        target, tool, connections, requests=1000, failures=failures, rps=rps, p50_ms=p50, p99_ms=p99
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
        result("service", 1, 400, p50=0.6),
        result("service", 32, 3300, p50=9.6, p99=40),
        result("kserve", 32, 150),
        result("mlserver", 32, 160),
        result("mlflow", 32, 90),
        result("constant", 32, 18000),
        # Locust's figures are a second column; the goals read wrk's.
        result("service", 32, 1, tool="locust"),
    ]
    checks = {name: (met, measured) for name, met, measured in goals(results)}
    assert checks["32 connections: >= 20x the best peer (mlserver)"] == (True, "20.6x")
    assert checks["32 connections: >= 30% of the constant endpoint"] == (False, "18%")
    assert checks["32 connections: p99 <= 3x p50"] == (False, "4.2x (9.6 / 40.0 ms)")
    assert checks["service: zero errors"] == (True, "0 errors")
    assert checks["1 connection: p50 < 1 ms"] == (True, "0.60 ms")
    failing = goals([result("service", 32, 1200, failures=3, p50=2, p99=5)])
    assert ("service: zero errors", False, "3 errors") in failing
    assert ("32 connections: p99 <= 3x p50", True, "2.5x (2.0 / 5.0 ms)") in failing
    # A run in which nothing was answered is no evidence of zero errors.
    silent = RunResult("service", "locust", 1, requests=0, failures=0, rps=0.0, p50_ms=0.0, p99_ms=0.0)
    checks = {name: (met, measured) for name, met, measured in goals([*results, silent])}
    assert checks["service: zero errors"] == (False, "0 errors, 1 run(s) without an answer")


def test_a_peer_that_failed_under_load_leaves_the_peer_goal_unmet() -> None:
    results = [
        result("service", 32, 4300, p50=7, p99=8),
        result("mlserver", 32, 206),
        result("kserve", 32, 0.1, failures=1),
        result("constant", 32, 28000),
    ]
    checks = {name: (met, measured) for name, met, measured in goals(results)}
    assert checks["32 connections: >= 20x the best peer"] == (False, "not measured: kserve failed (1 errors)")
    assert not any("best peer (" in name for name in checks)  # no ratio against the survivors


def test_markdown_table_lists_every_run_with_ratios() -> None:
    results = [result("service", 32, 3000), result("mlserver", 32, 150), result("constant", 32, 12000)]
    meta: dict[str, object] = {"model": "m v1", "cpus": 2, "machine": "x", "seconds": 12, "rounds": 2}
    table = markdown(results, InProcess(0.2, 0.4, 1000, 9.0), meta)
    assert "| service | 32 | wrk | 3,000 | 2.00 | 5.00 | 0 (0.0%) | - | 25% |" in table
    assert "| mlserver | 32 | wrk | 150 | 2.00 | 5.00 | 0 (0.0%) | 20.0x | 1% |" in table
    assert "| constant | 32 | wrk | 12,000 |" in table
    assert "parallel_workers 0" in table  # the peer's note
    assert "9.0 us per row in batches of 1000" in table
