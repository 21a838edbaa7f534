"""The chart's analysis, run by this CLI against Prometheus for native releases (no Argo controller).

The metrics come from the chart's own AnalysisTemplate (rendered, never copied): each query is run
``count`` times every ``interval`` with the two model versions filled in, and judged by its
``successCondition`` (``result[0] >= X`` or ``result[0] <= X``); no data counts as a failure, as in Argo.
"""

from __future__ import annotations

import math
import operator
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from release.errors import ReleaseError

CONDITION = re.compile(r"^\s*result\[0\]\s*(>=|<=|>|<)\s*([-+0-9.eE]+)\s*$")
OPERATORS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge,
    "<=": operator.le,
    ">": operator.gt,
    "<": operator.lt,
}
DURATION = re.compile(r"(\d+)(ms|s|m|h)")
UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}


def seconds(duration: str | int) -> float:
    """Argo/Prometheus durations (``30s``, ``1m30s``) in seconds."""
    if isinstance(duration, int) or str(duration).isdigit():
        return float(duration)
    parts = DURATION.findall(str(duration))
    if not parts:
        raise ReleaseError(f"cannot read the duration {duration!r}")
    return sum(int(amount) * UNIT_SECONDS[unit] for amount, unit in parts)


@dataclass(frozen=True)
class Metric:
    name: str
    query: str
    condition: str
    interval: float
    count: int
    failure_limit: int
    initial_delay: float

    def passes(self, value: float | None) -> bool:
        match = CONDITION.match(self.condition)
        if match is None:
            raise ReleaseError(f"metric {self.name}: unsupported successCondition {self.condition!r}")
        if value is None or math.isnan(value):
            return False
        return OPERATORS[match.group(1)](value, float(match.group(2)))


def metrics_of(template: dict[str, Any], args: dict[str, str]) -> list[Metric]:
    """The template's metrics with ``{{args.NAME}}`` filled in."""
    metrics = []
    for metric in template["spec"]["metrics"]:
        query = metric["provider"]["prometheus"]["query"]
        for name, value in args.items():
            query = query.replace(f"{{{{args.{name}}}}}", value)
        metrics.append(
            Metric(
                name=metric["name"],
                query=query,
                condition=metric["successCondition"],
                interval=seconds(metric.get("interval", "1m")),
                count=int(metric.get("count", 1)) or 1,
                failure_limit=int(metric.get("failureLimit", 0)),
                initial_delay=seconds(metric.get("initialDelay", "0s")),
            )
        )
    return metrics


def query(prometheus_url: str, promql: str) -> float | None:
    """First sample of an instant query; None when there is no data."""
    try:
        response = httpx.get(
            f"{prometheus_url.rstrip('/')}/api/v1/query", params={"query": promql}, timeout=15
        )
        body = response.json()
    except (httpx.HTTPError, ValueError) as exc:
        raise ReleaseError(f"cannot query Prometheus at {prometheus_url}: {exc}") from None
    if body.get("status") != "success":
        raise ReleaseError(f"Prometheus at {prometheus_url} refused an analysis query: {body.get('error')}")
    result = body["data"]["result"]
    return float(result[0]["value"][1]) if result else None


def run_analysis(
    prometheus_url: str,
    metrics: list[Metric],
    log: Callable[[str], None],
    sleep: Callable[[float], None] = time.sleep,
) -> tuple[bool, str]:
    """Measure every metric on its schedule; returns (passed, one-line summary)."""
    if not metrics:
        return True, "no analysis metrics enabled"
    failures = dict.fromkeys((metric.name for metric in metrics), 0)
    rounds = max(metric.count for metric in metrics)
    sleep(max(metric.initial_delay for metric in metrics))
    for round_index in range(rounds):
        for metric in metrics:
            if round_index >= metric.count:
                continue
            value = query(prometheus_url, metric.query)
            ok = metric.passes(value)
            failures[metric.name] += 0 if ok else 1
            log(
                f"analysis {metric.name} #{round_index + 1}/{metric.count}: "
                f"{'no data' if value is None else f'{value:.4g}'} -> {'ok' if ok else 'failed'}"
            )
            if failures[metric.name] > metric.failure_limit:
                return False, (
                    f"metric {metric.name!r} failed {failures[metric.name]} times "
                    f"(limit {metric.failure_limit}; {metric.condition.strip()}, last value {value})"
                )
        if round_index < rounds - 1:
            sleep(min(metric.interval for metric in metrics))
    return True, "analysis passed: " + ", ".join(f"{name} {failures[name]} failed" for name in failures)
