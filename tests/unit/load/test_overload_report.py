"""The overload benchmark's plumbing: request files, wrk commands and output, goal checks."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest

from bench.compare import BenchError
from bench.overload import (
    BATCH_ROWS,
    PROBE_LEAD_SECONDS,
    SCENARIOS,
    Run,
    TargetSpec,
    faults,
    goals,
    markdown,
    parse_result,
    request_lines,
    wrk_command,
)

pytestmark = pytest.mark.unit

ROWS = [{"MedInc": float(i), "HouseAge": 1.0} for i in range(100)]


def test_request_lines_are_single_rows_batches_or_the_documented_mix() -> None:
    singles = request_lines(SCENARIOS["single"], ROWS)
    assert all(line.startswith("/predict {") for line in singles)
    assert json.loads(singles[3].split(" ", 1)[1]) == ROWS[3]
    batches = request_lines(SCENARIOS["batch"], ROWS)
    assert all(len(json.loads(line.split(" ", 1)[1])["rows"]) == BATCH_ROWS for line in batches)
    mix = request_lines(SCENARIOS["mix"], ROWS)
    per_batch = SCENARIOS["mix"].singles_per_batch
    assert sum(line.startswith("/predict/batch ") for line in mix) * per_batch == sum(  # type: ignore[operator]
        line.startswith("/predict {") for line in mix
    )
    assert all("\n" not in line for line in mix)


def test_probes_get_a_thread_per_connection_and_start_first() -> None:
    crowd = wrk_command("wrk", "http://127.0.0.1:1", Path("r.txt"), 1020, 12, 2, probe=False)
    probe = wrk_command("wrk", "http://127.0.0.1:1", Path("r.txt"), 4, 12, 2, probe=True)
    assert crowd[:5] == ["wrk", "-t2", "-c1020", "-d12s", "--timeout=2s"]
    assert crowd[-2:] == ["--", "r.txt"]
    assert probe[:4] == ["wrk", "-t4", "-c4", f"-d{12 + PROBE_LEAD_SECONDS:g}s"]
    assert probe[-4:] == ["--", "r.txt", "probe", str(round(PROBE_LEAD_SECONDS * 1000))]


def test_the_result_line_is_found_among_wrk_output() -> None:
    output = 'Running 1s test\n  4 threads\noverload-result {"requests": 3, "statuses": {"200": 3}}\n'
    assert parse_result(output) == {"requests": 3, "statuses": {"200": 3}}
    with pytest.raises(BenchError, match="no result"):
        parse_result("Running 1s test\nunable to connect\n")


def run(
    factor: int, ok: int, p99: float | None = 50, unanswered: int = 0, rss_after: float = 400, faults: int = 0
) -> Run:
    return Run(
        target="after", scenario="single", connections=32 * factor, factor=factor, seconds=10,
        responses=ok + 100, ok_single=ok, ok_batch=0, shed=100, other_status=0,
        unanswered=unanswered, wrk_p99_ms=300, accepted_p99_ms=p99, accepted_max_ms=p99, accepted_samples=50,
        batch_p50_ms=None, batch_p99_ms=None,
        shed_p50_ms=1000, rss_before_mb=400, rss_after_mb=rss_after, same_pids=True, faults=faults,
    )  # fmt: skip


def test_goals_compare_each_overload_with_the_saturated_run() -> None:
    runs = [run(1, 30_000), run(8, 28_000), run(32, 20_000, p99=400, unanswered=3, rss_after=460, faults=2)]
    checks = {name: (met, measured) for name, met, measured in goals(runs, slo_ms=250)}
    assert checks["after single 8x: goodput >= 90% of saturated"] == (True, "93%")
    assert checks["after single 32x: goodput >= 90% of saturated"] == (False, "67%")
    assert checks["after single 8x: accepted p99 <= 250 ms"] == (True, "50 ms")
    assert checks["after single 32x: accepted p99 <= 250 ms"] == (False, "400 ms")
    assert checks["after single: every request answered"] == (False, "3 unanswered")
    assert checks["after single: RSS back within 10%"] == (False, "+15.0%")
    assert checks["after single: no fault counted by the service"] == (False, "2 counted")
    healthy = {name: met for name, met, _ in goals([run(1, 30_000), run(8, 28_000)], slo_ms=250)}
    assert healthy["after single: no fault counted by the service"] is True


def test_the_services_faults_are_its_5xx_but_the_shed_503() -> None:
    assert faults(Counter({"200": 5, "499": 4, "503": 3, "500": 2, "504": 1})) == 3
    assert faults(Counter({"200": 5, "503": 3})) == 0


def test_a_run_without_accepted_probe_requests_misses_the_latency_goal() -> None:
    checks = {name: met for name, met, _ in goals([run(1, 30_000), run(8, 28_000, p99=None)], slo_ms=250)}
    assert checks["after single 8x: accepted p99 <= 250 ms"] is False


def test_batch_goodput_is_counted_in_rows() -> None:
    batch = replace(run(1, 0), scenario="batch", ok_batch=50)
    assert batch.rows_per_second == 50 * BATCH_ROWS / 10
    table = markdown([batch], {"model": "m", "cpus": 2, "machine": "x", "seconds": 10, "timeout": 2,
                               "settings": "", "targets": "after = ."}, slo_ms=250)  # fmt: skip
    assert "| after | batch | 32 (1x) |" in table
    assert "5,000 |" in table


def test_targets_name_a_checkout_and_extra_service_settings(tmp_path: Path) -> None:
    spec = TargetSpec.parse(f"fifo={tmp_path}:TABULA_SERVICE_ADMISSION_ORDER=fifo,TABULA_SERVICE_X=1")
    assert spec == TargetSpec(
        "fifo", tmp_path.resolve(), {"TABULA_SERVICE_ADMISSION_ORDER": "fifo", "TABULA_SERVICE_X": "1"}
    )
    assert TargetSpec.parse(f"main={tmp_path}").settings == {}
    with pytest.raises(BenchError, match="TABULA_SERVICE_"):
        TargetSpec.parse(f"bad={tmp_path}:PATH=/tmp")
    with pytest.raises(BenchError, match="expected"):
        TargetSpec.parse("nothing")
