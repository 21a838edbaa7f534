"""The chart's analysis run by this CLI against Prometheus for native releases (no Argo controller).

It measures the way Argo's AnalysisRun controller does (``analysis/analysis.go``): each metric waits
``initialDelay``, then takes a measurement every ``interval`` until ``count`` measurements completed.
A measurement is Successful or Failed by its ``successCondition``; an empty result vector cannot be
indexed by ``result[0]`` and is an Error, which does not count and is retried after 10 s (the chart
guards it with ``len(result) > 0``, which makes no data a Failed measurement). The metric
fails once ``failed > failureLimit`` and errs once ``consecutiveErrors > consecutiveErrorLimit``; the
first failed metric ends the run. Missing data is therefore never a pass: it ends as Error, or as too
few successful measurements for the evidence rule.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from release.errors import ReleaseError
from release.evidence import MetricRecord, MetricSpec, Prometheus, fill
from release.kube import Clock

# One comparison of a successCondition: `len(result)` or `result[N]` against a number. The chart joins
# them with `&&` (`len(result) > 0 && result[0] >= 0.99`, the guard Argo's analysis docs advise).
COMPARISON = re.compile(r"^\s*(?:(len)\(result\)|result\[(\d+)\])\s*(>=|<=|==|!=|>|<)\s*([-+0-9.eE]+)\s*$")
OPERATORS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge,
    "<=": operator.le,
    ">": operator.gt,
    "<": operator.lt,
    "==": operator.eq,
    "!=": operator.ne,
}
ERROR_RETRY_SECONDS = 10.0  # Argo's DefaultErrorRetryInterval


def assess(condition: str, values: list[float]) -> str:
    """Phase of one measurement, as Argo's ``utils/evaluate/evaluate.go`` judges the chart's conditions.

    Terms joined by ``&&`` are evaluated left to right and stop at the first false one. Indexing past
    the end of the vector cannot be evaluated: an Error (an unguarded ``result[0]`` on no data). NaN
    fails every comparison but ``!=``, as in Argo's expression language.
    """
    terms = [COMPARISON.match(term) for term in condition.split("&&")]
    if not all(terms):
        raise ReleaseError(
            f"unsupported successCondition {condition!r} (the loop reads `len(result)` and `result[N]` "
            "compared with numbers, joined by &&)"
        )
    for match in terms:
        assert match is not None  # noqa: S101 - checked above, for the type checker
        length, index, op, threshold = match.groups()
        if length:
            value = float(len(values))
        elif int(index) < len(values):
            value = values[int(index)]
        else:
            return "Error"
        if not OPERATORS[op](value, float(threshold)):
            return "Failed"
    return "Successful"


@dataclass
class MetricRun:
    spec: MetricSpec
    query: str
    due: float
    phase: str = "Pending"
    successful: int = 0
    failed: int = 0
    errors: int = 0
    consecutive_errors: int = 0
    values: list[str] = field(default_factory=list)
    failed_values: list[str] = field(default_factory=list)

    @property
    def count(self) -> int:
        return self.successful + self.failed

    def record(self) -> MetricRecord:
        return MetricRecord(
            self.spec.name,
            self.phase,
            self.successful,
            self.failed,
            0,
            self.errors,
            tuple(self.values),
            tuple(self.failed_values),
        )

    def measure(self, prometheus: Prometheus, now: float) -> str:
        values = prometheus.vector(self.query)
        outcome = assess(self.spec.success_condition, values)
        shown = "[" + ",".join(f"{value:g}" for value in values) + "]"
        self.values.append(shown)
        if outcome == "Error":
            self.errors += 1
            self.consecutive_errors += 1
            self.due = now + ERROR_RETRY_SECONDS
        else:
            self.consecutive_errors = 0
            self.successful += outcome == "Successful"
            self.failed += outcome == "Failed"
            if outcome == "Failed":
                self.failed_values.append(shown)
            self.due = now + self.spec.interval
        if self.failed > self.spec.failure_limit:
            self.phase = "Failed"
        elif self.consecutive_errors > self.spec.consecutive_error_limit:
            self.phase = "Error"
        elif self.count >= self.spec.count:
            self.phase = "Successful"
        else:
            self.phase = "Running"
        return f"{shown} -> {outcome}"


@dataclass(frozen=True)
class RunResult:
    phase: str
    message: str
    metrics: tuple[MetricRecord, ...]


def run_analysis(
    prometheus: Prometheus,
    metrics: tuple[MetricSpec, ...],
    args: dict[str, str],
    clock: Clock,
    log: Callable[[str], None],
    give_up_at: float,
) -> RunResult:
    """Measure every metric on its schedule until all complete or one fails; ``give_up_at`` ends it early."""
    start = clock.now()
    runs = [MetricRun(metric, fill(metric.query, args), start + metric.initial_delay) for metric in metrics]
    while True:
        open_runs = [run for run in runs if run.phase in {"Pending", "Running"}]
        ended = [run for run in runs if run.phase in {"Failed", "Error"}]
        if ended or not open_runs:
            break
        now = clock.now()
        if now >= give_up_at:
            return RunResult(
                "Running", "the deadline ended the analysis", tuple(run.record() for run in runs)
            )
        for run in open_runs:
            if run.due <= now:
                detail = run.measure(prometheus, now)
                log(f"analysis {run.spec.name} #{run.count + run.errors}: {detail} ({run.phase})")
        waiting = [run.due for run in runs if run.phase in {"Pending", "Running"}]
        if waiting:
            clock.sleep(max(0.0, min([*waiting, give_up_at]) - clock.now()))
    worst = next((run for run in runs if run.phase == "Failed"), None) or next(
        (run for run in runs if run.phase == "Error"), None
    )
    records = tuple(run.record() for run in runs)
    if worst is None:
        return RunResult("Successful", "", records)
    limit = (
        f"failed ({worst.failed}) > failureLimit ({worst.spec.failure_limit})"
        if worst.phase == "Failed"
        else f"consecutiveErrors ({worst.consecutive_errors}) > consecutiveErrorLimit "
        f"({worst.spec.consecutive_error_limit})"
    )
    return RunResult(
        worst.phase, f'Metric "{worst.spec.name}" assessed {worst.phase} due to {limit}', records
    )
