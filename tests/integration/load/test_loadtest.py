"""`tabula loadtest` against a real HTTP server with the service's API shape, for a few seconds each.

Locust really runs (as the CLI's child process) and really sends traffic to 127.0.0.1; the
server is tests/integration/load/fake_service.py in one of its modes.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from cli.main import app
from tests.support import free_port, server

pytestmark = pytest.mark.integration

FAKE_SERVICE = Path(__file__).with_name("fake_service.py")
RUN = ["--run-time", "3s", "--users", "4", "--spawn-rate", "4"]
GENEROUS_LATENCY = ["--p95-ms", "2000", "--p99-ms", "5000"]


@pytest.fixture
def fake_service(tmp_path: Path) -> Iterator[Callable[[str], str]]:
    """Start fake services in the given mode and return their base URLs; stop them all afterwards."""
    with ExitStack() as running:

        def start(mode: str) -> str:
            url = f"http://127.0.0.1:{free_port()}"
            command = [sys.executable, str(FAKE_SERVICE), mode, url.rsplit(":", 1)[1]]
            running.enter_context(server(command, f"{url}/livez", tmp_path / f"fake-{mode}.log", timeout=30))
            return url

        yield start


def loadtest(*options: str) -> Result:
    """`tabula loadtest` through the root CLI, in this process (Locust itself runs in a child)."""
    return CliRunner().invoke(app, ["loadtest", *options])


def summary(out: Path) -> dict[str, Any]:
    document: dict[str, Any] = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    return document


def breached_gates(out: Path) -> set[str]:
    return {gate["gate"] for gate in summary(out)["gates"] if not gate["passed"]}


def test_healthy_service_passes_and_writes_csv_html_and_json(
    fake_service: Callable[[str], str], tmp_path: Path
) -> None:
    url = fake_service("ok")
    out = tmp_path / "report"

    result = loadtest("--url", url, "--out", str(out), *RUN, *GENEROUS_LATENCY, "--max-error-rate", "0")

    assert result.exit_code == 0, result.output
    assert "SLO gates" in result.output
    assert "BREACH" not in result.output
    report = summary(out)
    assert report["passed"] is True
    assert breached_gates(out) == set()
    # Both weighted tasks ran and every response held its predictions.
    stats = report["stats"]
    by_name = {endpoint["name"]: endpoint for endpoint in stats["endpoints"]}
    assert set(by_name) == {"/predict", "/predict/batch"}
    assert by_name["/predict"]["requests"] > by_name["/predict/batch"]["requests"] > 0
    assert stats["total"]["failures"] == 0
    # Locust's own CSV agrees with the gated numbers within its once-a-second refresh.
    csv_lines = (out / "locust_stats.csv").read_text(encoding="utf-8").splitlines()
    aggregated = next(line.split(",") for line in csv_lines if ",Aggregated," in line)
    assert 0 < int(aggregated[2]) <= stats["total"]["requests"]
    # The HTML report carries chart history, not only the final table.
    html = (out / "report.html").read_text(encoding="utf-8")
    template_args = json.loads(re.search(r"window\.templateArgs = (\{.*\})\n", html).group(1))  # type: ignore[union-attr]
    assert len(template_args["history"]) >= 2
    assert (out / "locust_stats_history.csv").stat().st_size > 0


def test_slow_service_breaches_latency_and_throughput_gates(
    fake_service: Callable[[str], str], tmp_path: Path
) -> None:
    url = fake_service("slow")
    out = tmp_path / "report"

    result = loadtest(
        "--url", url, "--out", str(out), *RUN, "--tags", "batch",
        "--p95-ms", "100", "--p99-ms", "150", "--min-rps", "1000", "--max-error-rate", "0",
    )  # fmt: skip

    assert result.exit_code == 1, result.output
    assert breached_gates(out) == {"p95_ms", "p99_ms", "min_rps"}
    assert re.search(r"SLO gate p95_ms breached: p95 latency \d+ ms > 100 ms", result.output)
    assert re.search(r"SLO gate p99_ms breached: p99 latency \d+ ms > 150 ms", result.output)
    assert "SLO gate min_rps breached: throughput" in result.output
    # --tags batch ran only the batch task.
    stats = summary(out)["stats"]
    assert [endpoint["name"] for endpoint in stats["endpoints"]] == ["/predict/batch"]


def test_answers_without_a_prediction_count_as_errors(
    fake_service: Callable[[str], str], tmp_path: Path
) -> None:
    url = fake_service("no-prediction")
    out = tmp_path / "report"

    result = loadtest("--url", url, "--out", str(out), *RUN, *GENEROUS_LATENCY, "--max-error-rate", "0.01")

    assert result.exit_code == 1, result.output
    assert breached_gates(out) == {"max_error_rate"}
    assert "SLO gate max_error_rate breached: error rate 100.00%" in result.output
    assert "lacks" in result.output
    failures = (out / "locust_failures.csv").read_text(encoding="utf-8")
    assert "response body lacks a numeric 'prediction'" in failures
    assert "response body lacks 'predictions' for 32 rows" in failures


def test_a_missing_payloads_file_is_a_bad_setting_refused_before_locust_starts(tmp_path: Path) -> None:
    missing = tmp_path / "missing-payloads.json"

    result = CliRunner().invoke(
        app,
        ["loadtest", "--url", "http://127.0.0.1:9", "--out", str(tmp_path / "report"), "--run-time", "2s"],
        env={"TABULA_LOAD_PAYLOADS_FILE": str(missing)},
    )

    assert result.exit_code == 2, result.output
    assert result.output == (
        "error: invalid setting TABULA_LOAD_PAYLOADS_FILE: Path does not point to a file\n"
    )
    assert not (tmp_path / "report").exists()


def test_a_locust_crash_is_an_unexpected_failure_exit_1_with_its_last_line(tmp_path: Path) -> None:
    # Valid settings, but the locustfile raises while Locust imports it: Locust exits non-zero.
    garbage = tmp_path / "payloads.json"
    garbage.write_text("{not json")

    result = CliRunner().invoke(
        app,
        ["loadtest", "--url", "http://127.0.0.1:9", "--out", str(tmp_path / "report"), "--run-time", "2s"],
        env={"TABULA_LOAD_PAYLOADS_FILE": str(garbage)},
    )

    assert result.exit_code == 1, result.output
    [error] = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert re.fullmatch(
        r"error: locust failed \(exit \d+\): json\.decoder\.JSONDecodeError: .*; see .*locust\.log", error
    )
    assert not (tmp_path / "report" / "summary.json").exists()


# --- any example: rows by the example's feature names, answers checked for its task ---


def test_a_classifier_passes_with_the_iris_rows_and_labels(
    fake_service: Callable[[str], str], tmp_path: Path
) -> None:
    url = fake_service("classifier")
    out = tmp_path / "report"

    result = loadtest(
        "--url", url, "--out", str(out), "--example", "iris", *RUN, *GENEROUS_LATENCY,
        "--max-error-rate", "0",
    )  # fmt: skip

    assert result.exit_code == 0, result.output
    assert "example=iris" in result.output
    stats = summary(out)["stats"]
    by_name = {endpoint["name"]: endpoint for endpoint in stats["endpoints"]}
    assert set(by_name) == {"/predict", "/predict/batch"}
    assert stats["total"]["failures"] == 0
    # The fake reads petal_length from every row: the rows carry iris' features, not housing's.
    assert stats["total"]["requests"] > 10


def test_a_classifier_without_probabilities_counts_as_errors(
    fake_service: Callable[[str], str], tmp_path: Path
) -> None:
    url = fake_service("classifier-no-probabilities")
    out = tmp_path / "report"

    result = loadtest(
        "--url", url, "--out", str(out), "--example", "iris", *RUN, *GENEROUS_LATENCY,
        "--max-error-rate", "0.01",
    )  # fmt: skip

    assert result.exit_code == 1, result.output
    assert breached_gates(out) == {"max_error_rate"}
    failures = (out / "locust_failures.csv").read_text(encoding="utf-8")
    assert "response body lacks a class 'prediction' among its 'probabilities'" in failures
    assert "response body lacks 'predictions' and 'probabilities' for 32 rows" in failures


def test_numbers_from_a_regression_service_fail_the_classification_check(
    fake_service: Callable[[str], str], tmp_path: Path
) -> None:
    """Sending iris rows to a number-answering service: every answer is the wrong task's (and every
    row lacks MedInc, so the fake tabula service errors)."""
    url = fake_service("ok")
    out = tmp_path / "report"

    result = loadtest(
        "--url", url, "--out", str(out), "--example", "iris", *RUN, *GENEROUS_LATENCY,
        "--max-error-rate", "0",
    )  # fmt: skip

    assert result.exit_code == 1, result.output
    assert summary(out)["stats"]["total"]["failures"] == summary(out)["stats"]["total"]["requests"] > 0


def test_an_unknown_example_is_a_bad_setting_refused_before_locust_starts(tmp_path: Path) -> None:
    result = loadtest(
        "--url", "http://127.0.0.1:9", "--out", str(tmp_path / "report"), "--run-time", "2s",
        "--example", "no-such-example",
    )  # fmt: skip

    assert result.exit_code == 2, result.output
    assert result.output == (
        "error: invalid setting example (given 'no-such-example'): Value error, no example "
        "'no-such-example': give one of ['housing', 'iris'] or a folder holding example.yaml\n"
    )
    assert not (tmp_path / "report").exists()
