"""The evidence rule of CONTRACT.md: what the loop reads from the chart's analysis ConfigMap, and when
what it measured is enough to move ``production``; and the native analysis' judgement of one
measurement, which follows Argo (``utils/evaluate/evaluate.go``: an empty result is an Error)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from release.analysis import assess
from release.drivers.argo import metric_records
from release.errors import ReleaseError
from release.evidence import AnalysisSpec, Evidence, MetricRecord, analysis_spec, fill, seconds

pytestmark = pytest.mark.unit

SPEC = {
    "trackLabel": "rollouts_pod_template_hash",
    "metrics": [
        {
            "name": "success-rate",
            "query": 'x{rollouts_pod_template_hash="{{args.candidate-track}}"}',
            "successCondition": "result[0] >= 0.99",
            "interval": "30s",
            "count": 6,
            "failureLimit": 0,
            "consecutiveErrorLimit": 4,
            "initialDelay": "30s",
        }
    ],
    "evidence": {
        "requestsQuery": 'sum(increase(r{t="{{args.track}}"}[{{args.range}}]))',
        "minRequests": 200,
        "minMeasurements": 3,
    },
}


def spec() -> AnalysisSpec:
    return AnalysisSpec.from_json(json.dumps(SPEC))


def evidence(**changes: Any) -> Evidence:
    base: dict[str, Any] = {
        "candidate_track": "h2",
        "stable_track": "h1",
        "window": 420.0,
        "candidate_requests": 1234.0,
        "stable_requests": 9876.0,
        "run_phase": "Running",
        "run_message": "",
        "metrics": (MetricRecord("success-rate", "Running", 3, 0, 0, 0, ("0.998", "0.999", "1")),),
    }
    return Evidence(**(base | changes))


def test_the_config_map_is_read_as_the_contract_says() -> None:
    objects = [
        {"kind": "AnalysisTemplate", "metadata": {"name": "tabula-analysis"}},
        {
            "kind": "ConfigMap",
            "metadata": {"name": "tabula-analysis"},
            "data": {"analysis.json": json.dumps(SPEC)},
        },
    ]
    found = analysis_spec(objects, "tabula-analysis")
    assert found == spec()
    [metric] = found.metrics
    assert (metric.interval, metric.count, metric.initial_delay, metric.consecutive_error_limit) == (
        30,
        6,
        30,
        4,
    )
    assert (found.min_requests, found.min_measurements) == (200, 3)
    assert analysis_spec(objects[:1], "tabula-analysis") is None
    assert fill(found.requests_query, {"track": "h2", "range": "420s"}) == 'sum(increase(r{t="h2"}[420s]))'


def test_a_config_map_of_another_shape_fails_in_one_line() -> None:
    with pytest.raises(ReleaseError, match="is not what the release loop reads: 'evidence'"):
        AnalysisSpec.from_json(json.dumps({"trackLabel": "x", "metrics": []}))


def test_enough_requests_and_measurements_is_evidence() -> None:
    assert evidence().verdict(spec()) is None
    assert evidence().tags() == {
        "release.evidence.requests.candidate": "1234",
        "release.evidence.requests.stable": "9876",
        "release.evidence.success-rate": "0.998,0.999,1",
    }


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        (
            {"candidate_requests": None},
            "no evidence: Prometheus has no request series of the candidate track",
        ),
        ({"candidate_requests": 199.0}, "no evidence: the candidate track h2 served 199 prediction requests"),
        ({"window": None}, "no evidence: no pod of the candidate track h2 is ready"),
        (
            {"metrics": (MetricRecord("success-rate", "Running", 2, 0, 0, 0, ("1", "1")),)},
            "no evidence: metric success-rate has 2 successful measurements, fewer than minMeasurements 3",
        ),
        (
            # A run cancelled before its first measurement is Successful in Argo: still no evidence.
            {"run_phase": "Successful", "metrics": ()},
            "no evidence: metric success-rate has 0 successful measurements",
        ),
        (
            {"run_phase": "Failed", "run_message": 'Metric "success-rate" assessed Failed due to failed (1)'},
            'Metric "success-rate" assessed Failed due to failed (1)',
        ),
        (
            {"metrics": (MetricRecord("success-rate", "Running", 3, 1, 0, 0, ("1", "1", "1", "0.9")),)},
            "analysis metric success-rate Running: 3 ok, 1 failed",
        ),
    ],
)
def test_what_is_not_evidence(changes: dict[str, Any], reason: str) -> None:
    verdict = evidence(**changes).verdict(spec())
    assert verdict is not None
    assert verdict.startswith(reason)


def test_no_analysis_at_all_is_no_evidence() -> None:
    verdict = evidence().verdict(None)
    assert verdict is not None
    assert verdict.startswith("no evidence: the chart renders no analysis ConfigMap")


def test_missing_traffic_is_reported_before_the_errors_it_caused() -> None:
    verdict = evidence(
        candidate_requests=None, run_phase="Error", run_message="consecutiveErrors (5)"
    ).verdict(spec())
    assert verdict is not None
    assert verdict.startswith("no evidence:")


def test_a_failure_measured_on_a_number_is_the_reason_even_with_too_few_requests() -> None:
    """A canary whose first p95 already misses the SLO (failureLimit 0) is rejected for that figure."""
    slow = MetricRecord("latency-p95", "Failed", 0, 1, 0, 0, ("0.4875",), failed_values=("0.4875",))
    verdict = evidence(candidate_requests=12.0, metrics=(slow,)).verdict(spec())
    assert verdict == (
        "analysis metric latency-p95 Failed: 0 ok, 1 failed, 0 inconclusive, 0 errors; values 0.4875"
    )
    message = 'Metric "latency-p95" assessed Failed due to failed (1) > failureLimit (0)'
    failed_run = evidence(candidate_requests=12.0, run_phase="Failed", run_message=message, metrics=(slow,))
    assert failed_run.verdict(spec()) == message


def test_a_failure_on_nan_is_still_missing_traffic() -> None:
    """evaluate.go: NaN compares false, so a ratio of no requests fails; the reason is the traffic."""
    empty = MetricRecord("success-rate", "Failed", 0, 1, 0, 0, ("NaN",), failed_values=("NaN",))
    verdict = evidence(candidate_requests=0.0, run_phase="Failed", metrics=(empty,)).verdict(spec())
    assert verdict is not None
    assert verdict.startswith("no evidence: the candidate track h2 served 0 prediction requests")


def test_one_measurement_is_judged_as_argo_judges_it() -> None:
    """utils/evaluate/evaluate.go: NaN compares false (Failed); result[0] of [] is an evaluation Error."""
    assert assess("result[0] >= 0.99", [0.995]) == "Successful"
    assert assess("result[0] >= 0.99", [0.9]) == "Failed"
    assert assess("result[0] >= 0.99", [float("nan")]) == "Failed"
    assert assess("result[0] <= 0.25", []) == "Error"
    # The chart's guarded form (docs/features/analysis.md): no data is a failed measurement, never a pass.
    guarded = "len(result) > 0 && result[0] >= 0.99"
    assert assess(guarded, [0.995]) == "Successful"
    assert assess(guarded, []) == "Failed"
    assert assess(guarded, [float("nan")]) == "Failed"
    assert assess("len(result) > 0 && result[0] != 1", [float("nan")]) == "Successful"
    with pytest.raises(ReleaseError, match="unsupported successCondition"):
        assess("result[0] >= 0.99 || true", [1.0])


def test_durations() -> None:
    assert [seconds(value) for value in ("30s", "1m30s", "2m", "1h", 15, "500ms")] == [
        30,
        90,
        120,
        3600,
        15,
        0.5,
    ]
    with pytest.raises(ReleaseError, match="cannot read the duration"):
        seconds("soon")


def test_argo_measurements_keep_the_values_that_failed() -> None:
    """analysis_types.go: each Measurement has its own phase and value; the failed ones are kept apart."""
    run = {
        "status": {
            "metricResults": [
                {
                    "name": "latency-p95",
                    "phase": "Failed",
                    "successful": 1,
                    "failed": 1,
                    "measurements": [
                        {"phase": "Successful", "value": "[0.12]"},
                        {"phase": "Failed", "value": "[0.49]"},
                        {"phase": "Error", "message": "no data"},
                    ],
                }
            ]
        }
    }
    [record] = metric_records(run)
    assert (record.values, record.failed_values, record.failed_on_a_number) == (
        ("0.12", "0.49"),
        ("0.49",),
        True,
    )
