"""The chart's analysis, run by this CLI against Prometheus for native releases (no Argo controller).

The metrics come from the chart's own ``<fullname>-analysis`` ConfigMap (``analysis.json``, rendered
by ``housing.analysisSpec``, never copied): each query is run ``count`` times every ``interval`` with
the two tracks filled in, and judged by its ``successCondition`` the way Argo judges it.
"""

from __future__ import annotations

import json
import operator
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from release.errors import ReleaseError

# One comparison of a successCondition: `len(result)` or `result[N]` against a number.
COMPARISON = re.compile(r"^\s*(?:(len)\(result\)|result\[(\d+)\])\s*(>=|<=|==|!=|>|<)\s*([-+0-9.eE]+)\s*$")
OPERATORS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge,
    "<=": operator.le,
    ">": operator.gt,
    "<": operator.lt,
    "==": operator.eq,
    "!=": operator.ne,
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


class MeasurementError(ReleaseError):
    """A condition that cannot be evaluated on a result (Argo's measurement phase Error)."""


@dataclass(frozen=True)
class Metric:
    name: str
    query: str
    condition: str
    interval: float
    count: int
    failure_limit: int
    initial_delay: float

    def passes(self, result: list[float]) -> bool:
        """The successCondition on a query's vector, as Argo evaluates it (utils/evaluate/evaluate.go).

        The chart emits comparisons joined by ``&&`` (``len(result) > 0 && result[0] >= 0.99``),
        evaluated left to right and stopping at the first false one. Indexing past the end is an
        error, as in Argo's expression language; NaN fails every comparison but ``!=``.
        """
        terms = [(term.strip(), COMPARISON.match(term)) for term in self.condition.split("&&")]
        if not all(match for _, match in terms):
            raise ReleaseError(f"metric {self.name}: unsupported successCondition {self.condition!r}")
        for term, match in terms:
            assert match is not None  # noqa: S101 - checked above, for the type checker
            length, index, op, threshold = match.groups()
            if length:
                value = float(len(result))
            elif int(index) < len(result):
                value = result[int(index)]
            else:
                raise MeasurementError(f"metric {self.name}: {term} on a result of {len(result)} samples")
            if not OPERATORS[op](value, float(threshold)):
                return False
        return True


def analysis_spec(objects: list[dict[str, Any]], name: str) -> dict[str, Any] | None:
    """The parsed analysis.json of the chart's ConfigMap ``name`` in rendered objects, if it renders one."""
    for obj in objects:
        if obj["kind"] == "ConfigMap" and obj["metadata"]["name"] == name:
            spec: dict[str, Any] = json.loads(obj["data"]["analysis.json"])
            return spec
    return None


def fill(text: str, args: dict[str, str]) -> str:
    """``text`` with Argo's ``{{args.NAME}}`` placeholders replaced."""
    for name, value in args.items():
        text = text.replace(f"{{{{args.{name}}}}}", value)
    return text


def metrics_of(spec: dict[str, Any], args: dict[str, str]) -> list[Metric]:
    """The metrics of the chart's analysis.json with ``{{args.NAME}}`` filled in."""
    metrics = []
    for metric in spec["metrics"]:
        query = fill(metric["query"], args)
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


def query(prometheus_url: str, promql: str) -> list[float]:
    """The sample values of an instant query's vector (Argo's ``result``); empty when there is no data."""
    try:
        response = httpx.get(
            f"{prometheus_url.rstrip('/')}/api/v1/query", params={"query": promql}, timeout=15
        )
        body = response.json()
    except (httpx.HTTPError, ValueError) as exc:
        raise ReleaseError(f"cannot query Prometheus at {prometheus_url}: {exc}") from None
    if body.get("status") != "success":
        raise ReleaseError(f"Prometheus at {prometheus_url} refused an analysis query: {body.get('error')}")
    return [float(sample["value"][1]) for sample in body["data"]["result"]]


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
            try:
                ok = metric.passes(value)
            except MeasurementError:
                ok = False  # Argo would count an Error; here it fails the measurement outright
            failures[metric.name] += 0 if ok else 1
            shown = ", ".join(f"{v:.4g}" for v in value) or "no data"
            log(
                f"analysis {metric.name} #{round_index + 1}/{metric.count}: "
                f"[{shown}] -> {'ok' if ok else 'failed'}"
            )
            if failures[metric.name] > metric.failure_limit:
                return False, (
                    f"metric {metric.name!r} failed {failures[metric.name]} times "
                    f"(limit {metric.failure_limit}; {metric.condition.strip()}, last value {value})"
                )
        if round_index < rounds - 1:
            sleep(min(metric.interval for metric in metrics))
    return True, "analysis passed: " + ", ".join(f"{name} {failures[name]} failed" for name in failures)
