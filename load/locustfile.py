"""Locust user of the service: weighted one-row and batch predictions of any example's model.

Tags select a scenario: ``--tags single`` (only /predict), ``--tags batch`` (only /predict/batch);
without tags both run, weighted by ``TABULA_LOAD_SINGLE_WEIGHT`` / ``TABULA_LOAD_BATCH_WEIGHT``.
Run it through ``tabula loadtest`` (SLO gates, reports) or directly with ``locust -f``.
On quitting it writes the run's final statistics to ``TABULA_LOAD_OUT/run_stats.json``.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from typing import Any, Protocol, cast

import gevent
import locust.stats
from locust import FastHttpUser, between, events, tag, task
from locust.env import Environment
from locust.stats import StatsEntry, StatsError

from contracts.examples import load_example
from load.answers import ANSWERS, Answers
from load.config import LoadSettings
from load.gates import RUN_STATS_FILE, EndpointStats, RunStats
from load.payloads import load_rows

SETTINGS = LoadSettings()
ROWS = load_rows(SETTINGS)
# What the served model answers: a number (regression) or a class label with probabilities.
ANSWER_CHECK = ANSWERS[load_example(SETTINGS.example).spec.task]
# One chart point a second (Locust's default is 5 s): analysis runs are short and the HTML report
# draws its charts from this history.
locust.stats.HISTORY_STATS_INTERVAL_SEC = 1


class CheckedResponse(Protocol):
    """What the checks use of Locust's ``catch_response=True`` context (typed here; locust's is not)."""

    status_code: int
    content: bytes | None

    def success(self) -> None: ...

    def failure(self, exc: str) -> None: ...


class _EventHook(Protocol):
    def add_listener(self, handler: Callable[..., None]) -> object: ...


def _json_body(response: CheckedResponse) -> dict[str, Any] | None:
    try:
        body = json.loads(response.content or b"")
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def _judge(response: CheckedResponse, problem: Callable[[dict[str, Any]], str | None]) -> None:
    if response.status_code != 200:
        response.failure(f"HTTP {response.status_code}")
        return
    body = _json_body(response)
    reason = "response body is not a JSON object" if body is None else problem(body)
    if reason is None:
        response.success()
    else:
        response.failure(reason)


def check_single(response: CheckedResponse, answers: Answers) -> None:
    """Fail the request unless it is a 200 whose body holds the task's prediction."""
    _judge(response, answers.single)


def check_batch(response: CheckedResponse, expected: int, answers: Answers) -> None:
    """Fail the request unless it is a 200 with the task's prediction for each of the rows sent."""
    _judge(response, lambda body: answers.batch(body, expected))


def _refresh_event_loop_clock(**_: object) -> None:
    # gevent's loop caches "now" from before the imports; without a refresh, --run-time ends early.
    gevent.get_hub().loop.update_now()


def _endpoint_stats(entry: StatsEntry) -> EndpointStats:
    measured = entry.num_requests > 0
    return EndpointStats(
        method=entry.method or "",
        name=entry.name,
        requests=entry.num_requests,
        failures=entry.num_failures,
        p50_ms=entry.get_response_time_percentile(0.5) if measured else None,
        p95_ms=entry.get_response_time_percentile(0.95) if measured else None,
        p99_ms=entry.get_response_time_percentile(0.99) if measured else None,
        max_ms=entry.max_response_time if measured else None,
        rps=entry.total_rps,
    )


def _describe(error: StatsError) -> str:
    return f"{error.method} {error.name}: {StatsError.parse_error(error.error)} ({error.occurrences}x)"


def _write_run_stats(environment: Environment, **_: object) -> None:
    # Locust's own CSV is refreshed once a second; the gates need the final in-memory numbers.
    stats = environment.stats
    errors = list(stats.errors.values())
    runner = environment.runner
    exceptions = list(runner.exceptions.values()) if runner is not None else []
    top_exception = max(exceptions, key=lambda row: row["count"]) if exceptions else None
    run_stats = RunStats(
        total=_endpoint_stats(stats.total),
        endpoints=[_endpoint_stats(entry) for entry in stats.entries.values() if entry.num_requests],
        top_failure=_describe(max(errors, key=lambda error: error.occurrences)) if errors else None,
        task_exceptions=sum(row["count"] for row in exceptions),
        top_exception=f"{top_exception['msg']} ({top_exception['count']}x)" if top_exception else None,
    )
    SETTINGS.out.mkdir(parents=True, exist_ok=True)
    (SETTINGS.out / RUN_STATS_FILE).write_text(run_stats.model_dump_json(indent=2) + "\n", encoding="utf-8")


cast(_EventHook, events.init).add_listener(_refresh_event_loop_clock)
cast(_EventHook, events.quitting).add_listener(_write_run_stats)


class TabulaUser(FastHttpUser):
    """One client of the service, picking rows at random from the example's held-out test split."""

    host = SETTINGS.base_url
    wait_time = between(SETTINGS.wait_min_s, SETTINGS.wait_max_s)
    network_timeout = SETTINGS.request_timeout_s
    connection_timeout = SETTINGS.request_timeout_s

    @tag("single")
    @task(SETTINGS.single_weight)
    def predict_one(self) -> None:
        with self.client.post(
            "/predict", json=random.choice(ROWS), name="/predict", catch_response=True
        ) as response:
            check_single(response, ANSWER_CHECK)

    @tag("batch")
    @task(SETTINGS.batch_weight)
    def predict_batch(self) -> None:
        rows = random.choices(ROWS, k=SETTINGS.batch_size)
        with self.client.post(
            "/predict/batch", json={"rows": rows}, name="/predict/batch", catch_response=True
        ) as response:
            check_batch(response, len(rows), ANSWER_CHECK)
