"""The release gate's evidence: no evidence, no promotion.

The chart renders its analysis once, as JSON in the ConfigMap ``<fullname>-analysis`` (key
``analysis.json``), for Argo and native releases alike. The loop reads it from ``helm template`` of the
installed values, asks Prometheus itself how many prediction requests the candidate and the stable
track served, and takes the analysis measurements (Argo: the AnalysisRun's ``status.metricResults``;
native: its own). ``production`` may move only when the candidate served at least ``minRequests``
requests since its pods became ready and every metric has at least ``minMeasurements`` successful
measurements, none failed.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx

from release.errors import ReleaseError

ANALYSIS_KEY = "analysis.json"
DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
VALUES_KEPT = 10
FAILED_PHASES = {"Failed", "Error", "Inconclusive"}


def seconds(duration: str | int | float | None, default: float = 0.0) -> float:
    """Argo/Prometheus durations (``30s``, ``1m30s``, ``90``) in seconds."""
    if duration is None or duration == "":
        return default
    if isinstance(duration, int | float) or str(duration).replace(".", "", 1).isdigit():
        return float(duration)
    parts = DURATION.findall(str(duration))
    if not parts or "".join(amount + unit for amount, unit in parts) != str(duration):
        raise ReleaseError(f"cannot read the duration {duration!r}")
    return sum(float(amount) * UNIT_SECONDS[unit] for amount, unit in parts)


def timestamp(text: str) -> float:
    """Epoch seconds of a Kubernetes RFC 3339 time (``2026-12-01T08:00:00Z``)."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def fill(template: str, args: dict[str, str]) -> str:
    """Argo's ``{{args.NAME}}`` placeholders filled in."""
    for name, value in args.items():
        template = template.replace(f"{{{{args.{name}}}}}", value)
    return template


@dataclass(frozen=True)
class MetricSpec:
    """One analysis metric, as Argo's AnalysisTemplate has it (durations in seconds)."""

    name: str
    query: str
    success_condition: str
    interval: float
    count: int
    failure_limit: int
    consecutive_error_limit: int
    initial_delay: float


@dataclass(frozen=True)
class AnalysisSpec:
    """The chart's ``analysis.json``: metrics, and what counts as evidence."""

    track_label: str
    metrics: tuple[MetricSpec, ...]
    requests_query: str
    min_requests: int
    min_measurements: int

    def measuring_seconds(self) -> float:
        """How long the analysis takes to measure: its slowest metric's initial delay and count intervals."""
        return max((m.initial_delay + m.count * m.interval for m in self.metrics), default=0.0)

    @classmethod
    def from_json(cls, text: str) -> AnalysisSpec:
        try:
            body = json.loads(text)
            evidence = body["evidence"]
            metrics = tuple(
                MetricSpec(
                    name=str(metric["name"]),
                    query=str(metric["query"]),
                    success_condition=str(metric["successCondition"]),
                    interval=seconds(metric.get("interval"), 60.0),
                    count=int(metric.get("count", 1) or 1),
                    failure_limit=int(metric.get("failureLimit", 0)),
                    consecutive_error_limit=int(metric.get("consecutiveErrorLimit", 4)),
                    initial_delay=seconds(metric.get("initialDelay")),
                )
                for metric in body["metrics"]
            )
            return cls(
                track_label=str(body["trackLabel"]),
                metrics=metrics,
                requests_query=str(evidence["requestsQuery"]),
                min_requests=int(evidence["minRequests"]),
                min_measurements=int(evidence["minMeasurements"]),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise ReleaseError(
                f"the chart's {ANALYSIS_KEY} is not what the release loop reads: {exc}"
            ) from None


def analysis_spec(objects: list[dict[str, Any]], name: str) -> AnalysisSpec | None:
    """The analysis ConfigMap ``name`` among rendered objects; None when the chart renders none."""
    for obj in objects:
        if obj.get("kind") == "ConfigMap" and obj["metadata"]["name"] == name:
            return AnalysisSpec.from_json(str(obj.get("data", {}).get(ANALYSIS_KEY, "")))
    return None


class Prometheus:
    """Instant queries of the Prometheus the loop reads its evidence from."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")

    def vector(self, promql: str) -> list[float]:
        """The sample values of an instant query (empty when no series matches)."""
        try:
            response = httpx.get(f"{self.url}/api/v1/query", params={"query": promql}, timeout=15)
            body = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise ReleaseError(f"cannot query Prometheus at {self.url}: {exc}") from None
        if body.get("status") != "success":
            raise ReleaseError(f"Prometheus at {self.url} refused a query: {body.get('error')}")
        data = body["data"]
        if data["resultType"] == "scalar":
            return [float(data["result"][1])]
        return [float(sample["value"][1]) for sample in data["result"]]

    def requests(self, spec: AnalysisSpec, track: str, window: float) -> float | None:
        """Prediction requests ``track`` served over the last ``window`` seconds; None: no series."""
        promql = fill(spec.requests_query, {"track": track, "range": f"{max(1, math.ceil(window))}s"})
        values = self.vector(promql)
        return values[0] if values else None


@dataclass(frozen=True)
class MetricRecord:
    """What an analysis measured for one metric so far."""

    name: str
    phase: str
    successful: int
    failed: int
    inconclusive: int
    errors: int
    values: tuple[str, ...]
    # The values of the measurements that failed their condition (a subset of ``values``).
    failed_values: tuple[str, ...] = ()

    @property
    def failed_on_a_number(self) -> bool:
        """A measurement failed on a real number: NaN (e.g. a ratio of no requests) also fails in Argo."""
        return any(is_number(value) for value in self.failed_values)

    def describe(self) -> str:
        return (
            f"{self.name} {self.phase}: {self.successful} ok, {self.failed} failed, "
            f"{self.inconclusive} inconclusive, {self.errors} errors; values {', '.join(self.values) or '-'}"
        )


@dataclass(frozen=True)
class Evidence:
    """Requests per track and the analysis measurements, read when the loop decides."""

    candidate_track: str
    stable_track: str | None
    window: float | None  # seconds since the candidate's pods became ready; None: none ready
    candidate_requests: float | None
    stable_requests: float | None
    run_phase: str
    run_message: str
    metrics: tuple[MetricRecord, ...]

    def traffic_shortfall(self, spec: AnalysisSpec | None) -> str | None:
        """Why the candidate's traffic is no evidence (no analysis, no ready pod, too few requests)."""
        if spec is None:
            return (
                "no evidence: the chart renders no analysis ConfigMap (rollout.analysis.enabled is off or "
                "the strategy is rollingUpdate), so nothing judged the candidate"
            )
        if not spec.metrics:
            return "no evidence: the analysis has no metrics"
        if self.window is None:
            return f"no evidence: no pod of the candidate track {self.candidate_track} is ready"
        if self.candidate_requests is None:
            return (
                f"no evidence: Prometheus has no request series of the candidate track "
                f"({spec.track_label}={self.candidate_track})"
            )
        if self.candidate_requests < spec.min_requests:
            return (
                f"no evidence: the candidate track {self.candidate_track} served "
                f"{self.candidate_requests:.0f} prediction requests in {self.window:.0f}s since its pods "
                f"became ready, fewer than minRequests {spec.min_requests}"
            )
        return None

    def measurement_shortfall(self, spec: AnalysisSpec) -> str | None:
        measured = {record.name: record for record in self.metrics}
        for metric in spec.metrics:
            record = measured.get(metric.name)
            successful = record.successful if record else 0
            if successful < spec.min_measurements:
                return (
                    f"no evidence: metric {metric.name} has {successful} successful measurements, fewer than "
                    f"minMeasurements {spec.min_measurements}"
                )
        return None

    def measured_failure(self) -> str | None:
        """:meth:`failure` when a metric failed on a number it measured: a verdict on the model itself,
        however few requests it saw, so it is reported before a shortfall of traffic (the release is
        rejected either way; the reason says which figure rejected it)."""
        if any(record.failed_on_a_number for record in self.metrics):
            return self.failure()
        return None

    def failure(self) -> str | None:
        """A failed, erroneous or inconclusive measurement or run, or None."""
        if self.run_phase in FAILED_PHASES:
            return self.run_message or f"the analysis ended {self.run_phase}"
        for record in self.metrics:
            if record.phase in FAILED_PHASES or record.failed or record.inconclusive:
                return f"analysis metric {record.describe()}"
        return None

    def verdict(self, spec: AnalysisSpec | None) -> str | None:
        """None when this is enough evidence to promote; otherwise why not.

        A measured failure comes first; then missing traffic (an analysis of no data errs, and that is
        no evidence, not a verdict on the model); then other failures; then too few successful
        measurements.
        """
        if reason := self.measured_failure() or self.traffic_shortfall(spec):
            return reason
        assert spec is not None  # noqa: S101 - traffic_shortfall reports a missing spec
        return self.failure() or self.measurement_shortfall(spec)

    def lines(self) -> list[str]:
        window = "no ready pod" if self.window is None else f"{self.window:.0f}s"
        lines = [
            (
                f"evidence: candidate track {self.candidate_track}: {count(self.candidate_requests)} "
                f"prediction requests ({window}); stable track {self.stable_track or '?'}: "
                f"{count(self.stable_requests)}"
            ),
            f"evidence: analysis {self.run_phase}" + (f" ({self.run_message})" if self.run_message else ""),
        ]
        return lines + [f"evidence: {record.describe()}" for record in self.metrics]

    def tags(self) -> dict[str, str]:
        tags = {
            "release.evidence.requests.candidate": count(self.candidate_requests),
            "release.evidence.requests.stable": count(self.stable_requests),
        }
        for record in self.metrics:
            tags[f"release.evidence.{record.name}"] = ",".join(record.values[-VALUES_KEPT:]) or "none"
        return tags


def is_number(shown: str) -> bool:
    """Whether a shown measurement (``0.41`` or a vector ``0.41,0.39``) holds only finite numbers."""
    try:
        return all(math.isfinite(float(part)) for part in shown.strip("[]").split(","))
    except ValueError:
        return False


def count(requests: float | None) -> str:
    return "missing" if requests is None else f"{requests:.0f}"
