"""The built Bento under a real `bentoml serve`: every endpoint, every bad input, metrics, logs, readiness."""

from __future__ import annotations

import json
import re
import socket
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from contracts.artifacts import GOLDEN_SET_FILE, GoldenSet
from tests.integration.service.conftest import FEATURES, RegisteredModel, run_cli
from tests.support import Server, server_home, service_env, start_server, stop_server, unmeasured

pytestmark = pytest.mark.integration

ROW = {
    "MedInc": 3.5,
    "HouseAge": 25.0,
    "AveRooms": 5.2,
    "AveBedrms": 1.05,
    "Population": 1200.0,
    "AveOccup": 2.9,
    "Latitude": 34.05,
    "Longitude": -118.25,
}


@pytest.fixture(scope="module")
def client(served: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=served.base_url, timeout=30) as http:
        yield http


@pytest.fixture(scope="module")
def golden(bentoml_home: Path, bento_tag: str, registered_model: RegisteredModel) -> GoldenSet:
    """The golden set as imported into the BentoML model store by `tabula build`."""
    pattern = f"{registered_model.name}/v{registered_model.version}-*/{GOLDEN_SET_FILE}"
    matches = list((bentoml_home / "models").glob(pattern))
    assert len(matches) == 1, matches
    return GoldenSet.read(matches[0])


def samples(http: httpx.Client) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    text = http.get("/metrics").text
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(metrics: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in metrics.items() if n == name and wanted <= ls)


def assert_error(
    response: httpx.Response, status: int, error_type: str, field: str | None, constraint: str
) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["type"] == error_type
    assert error["message"]
    matching = [d for d in error["details"] if d["field"] == field and d["constraint"] == constraint]
    assert matching, error["details"]
    return dict(matching[0])


def test_predict_one_row(client: httpx.Client, registered_model: RegisteredModel) -> None:
    response = client.post("/predict", json=ROW)
    assert response.status_code == 200, response.text
    body = response.json()
    assert 0 < body["prediction"] < 10
    assert set(body) == {
        "prediction",
        "prediction_id",
        "model_name",
        "model_version",
        "timestamp",
        "warnings",
    }
    assert uuid.UUID(body["prediction_id"]).version == 4
    assert body["model_name"] == registered_model.name
    assert body["model_version"] == registered_model.version
    assert body["timestamp"]
    assert body["warnings"] == []


def test_golden_rows_reproduce_over_http(client: httpx.Client, golden: GoldenSet) -> None:
    rows = [dict(zip(golden.feature_names, row, strict=True)) for row in golden.rows]
    singles = [client.post("/predict", json=row).json()["prediction"] for row in rows]
    batch = client.post("/predict/batch", json={"rows": rows}).json()
    assert singles == pytest.approx(golden.predictions, abs=1e-9)
    assert batch["predictions"] == pytest.approx(golden.predictions, abs=1e-9)
    assert batch["count"] == len(rows)


def test_batch_returns_predictions_in_order(client: httpx.Client, registered_model: RegisteredModel) -> None:
    rows = registered_model.test_rows.iloc[:200].to_dict(orient="records")
    body = client.post("/predict/batch", json={"rows": rows}).json()
    singles = [client.post("/predict", json=row).json()["prediction"] for row in rows[:5]]
    assert body["count"] == 200
    assert len(body["predictions"]) == 200
    assert body["predictions"][:5] == pytest.approx(singles, abs=1e-12)
    assert body["model_version"] == registered_model.version
    assert body["model_name"] == registered_model.name


def test_batch_of_exactly_the_limit_is_accepted(client: httpx.Client) -> None:
    response = client.post("/predict/batch", json={"rows": [ROW] * 1000})
    assert response.status_code == 200, response.text
    assert response.json()["count"] == 1000


def test_soft_limits_warn_and_count(client: httpx.Client) -> None:
    before = samples(client)
    response = client.post("/predict", json={**ROW, "AveRooms": 500.0, "AveOccup": 900.0})
    assert response.status_code == 200, response.text
    flagged = {w["feature"] for w in response.json()["warnings"]}
    assert flagged == {"AveRooms", "AveOccup"}
    warning = next(w for w in response.json()["warnings"] if w["feature"] == "AveOccup")
    assert warning["value"] == 900.0
    assert warning["low"] < warning["high"] < 900.0
    after = samples(client)
    for feature in flagged:
        name = "tabula_input_out_of_range_total"
        assert value(after, name, feature=feature) == value(before, name, feature=feature) + 1


BAD_ROWS: list[tuple[str, Any, str | None, str, Any]] = [
    ("string number", {**ROW, "MedInc": "3.5"}, "MedInc", "float_type", "3.5"),
    ("boolean", {**ROW, "HouseAge": True}, "HouseAge", "float_type", True),
    ("null", {**ROW, "AveRooms": None}, "AveRooms", "float_type", None),
    ("missing field", {k: v for k, v in ROW.items() if k != "Population"}, "Population", "missing", None),
    ("extra field", {**ROW, "Bedrooms": 3}, "Bedrooms", "extra_forbidden", 3),
    ("negative count", {**ROW, "Population": -5.0}, "Population", "greater_than_equal", -5.0),
    ("negative average", {**ROW, "AveOccup": -0.1}, "AveOccup", "greater_than_equal", -0.1),
    ("latitude north of California", {**ROW, "Latitude": 48.0}, "Latitude", "less_than_equal", 48.0),
    ("longitude east of California", {**ROW, "Longitude": -100.0}, "Longitude", "less_than_equal", -100.0),
    ("array instead of object", [ROW], None, "model_type", "<list of 1 items>"),
]


@pytest.mark.parametrize(
    ("case", "payload", "field", "constraint", "received"), BAD_ROWS, ids=[c[0] for c in BAD_ROWS]
)
def test_hard_limits_are_422_naming_field_constraint_value(
    client: httpx.Client, case: str, payload: Any, field: str | None, constraint: str, received: Any
) -> None:
    detail = assert_error(client.post("/predict", json=payload), 422, "validation_error", field, constraint)
    assert detail["value"] == received


@pytest.mark.parametrize(
    ("token", "received"), [("NaN", "nan"), ("Infinity", "inf"), ("-Infinity", "-inf"), ("1e999", "inf")]
)
def test_non_finite_numbers_are_422(client: httpx.Client, token: str, received: str) -> None:
    others = ", ".join(f'"{name}": {number}' for name, number in ROW.items() if name != "MedInc")
    body = f'{{"MedInc": {token}, {others}}}'
    response = client.post("/predict", content=body, headers={"content-type": "application/json"})
    detail = assert_error(response, 422, "validation_error", "MedInc", "finite_number")
    assert detail["value"] == received


@pytest.mark.parametrize(
    "body", ['{"MedInc": 3.5,', "not json", "{'MedInc': 1}", ""], ids=["truncated", "text", "quotes", "empty"]
)
def test_invalid_json_is_400(client: httpx.Client, body: str) -> None:
    response = client.post("/predict", content=body, headers={"content-type": "application/json"})
    assert_error(response, 400, "invalid_json", None, "json_invalid")


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
def test_wrong_content_type_is_415(client: httpx.Client, content_type: str | None) -> None:
    headers = {"content-type": content_type} if content_type else {}
    response = client.post("/predict/batch", content=b'{"rows": []}', headers=headers)
    assert_error(response, 415, "unsupported_media_type", None, "content_type")


def test_oversized_body_is_413(client: httpx.Client) -> None:
    body = b'{"rows": [' + b",".join([b'{"MedInc": 3.5}'] * 80_000) + b"]}"
    assert len(body) > 1_000_000
    response = client.post("/predict/batch", content=body, headers={"content-type": "application/json"})
    assert_error(response, 413, "payload_too_large", None, "max_bytes")


def test_empty_batch_is_422(client: httpx.Client) -> None:
    assert_error(
        client.post("/predict/batch", json={"rows": []}), 422, "validation_error", "rows", "too_short"
    )


def test_batch_over_the_limit_is_422(client: httpx.Client) -> None:
    response = client.post("/predict/batch", json={"rows": [ROW] * 1001})
    assert_error(response, 422, "validation_error", "rows", "value_error")


def test_bad_row_inside_batch_names_its_index(client: httpx.Client) -> None:
    response = client.post("/predict/batch", json={"rows": [ROW, {**ROW, "Latitude": "north"}]})
    assert_error(response, 422, "validation_error", "rows.1.Latitude", "float_type")


def test_model_card(client: httpx.Client, registered_model: RegisteredModel) -> None:
    card = client.get("/model").json()
    assert card["name"] == registered_model.name
    assert card["version"] == registered_model.version
    assert card["run_id"] == registered_model.run_id
    assert card["alias"] == "production"
    assert card["metrics"] == {"test_rmse": 0.61, "test_r2": 0.7}
    assert [s["name"] for s in card["feature_stats"]] == FEATURES
    assert all(s["soft_low"] <= s["mean"] <= s["soft_high"] for s in card["feature_stats"])
    assert card["training_rows"] == 1000
    assert card["loaded_at"]
    assert card["predictor"] == "compiled-trees"
    # HistGradientBoosting exposes no feature importances; the card says so rather than inventing them.
    assert card["feature_importances"] is None


def test_health_and_docs(client: httpx.Client) -> None:
    assert client.get("/livez").status_code == 200
    assert client.get("/readyz").status_code == 200
    docs = client.get("/docs")
    assert docs.status_code == 200
    assert "swagger" in docs.text.lower()
    spec = client.get("/openapi.json").json()
    assert {"/predict", "/predict/batch", "/model"} <= set(spec["paths"])
    assert "MedInc" in str(spec["paths"]["/predict"]["post"]["requestBody"])


def test_metrics_change_after_requests(client: httpx.Client, registered_model: RegisteredModel) -> None:
    model = {"model_name": registered_model.name, "model_version": registered_model.version}
    # The drift window (1,000 rows) is the served process's: other tests' rows must not be in it.
    assert client.post("/predict/batch", json={"rows": [ROW] * 1000}).status_code == 200
    before = samples(client)
    for _ in range(3):
        assert client.post("/predict", json=ROW).status_code == 200
    assert client.post("/predict/batch", json={"rows": [ROW] * 4}).status_code == 200
    assert client.post("/predict", json={**ROW, "Latitude": 99}).status_code == 422
    time.sleep(0.05)
    after = samples(client)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **model, **labels) - value(before, name, **model, **labels)

    assert delta("tabula_predictions_total", route="/predict") == 3
    assert delta("tabula_predictions_total", route="/predict/batch") == 4
    assert delta("tabula_prediction_value_count") == 7
    assert delta("tabula_http_requests_total", route="/predict", status_code="200") == 3
    assert delta("tabula_http_requests_total", route="/predict", status_code="422") == 1
    assert delta("tabula_http_request_duration_seconds_count", route="/predict/batch") == 1
    assert value(after, "tabula_model_info", **model, run_id=registered_model.run_id) == 1
    psi = {dict(labels)["feature"]: v for (n, labels), v in after.items() if n == "tabula_feature_drift_psi"}
    assert set(psi) == set(FEATURES)
    # A window full of one repeated row is far from the training distribution.
    assert psi["MedInc"] > 0.5


# Headers that promise 400 bytes of JSON, and 14 of them.
HALF_A_BODY = (
    b"POST /predict HTTP/1.1\r\nHost: service\r\n"
    b"Content-Type: application/json\r\nContent-Length: 400\r\n\r\n"
    b'{"MedInc": 3.5'
)


def address(server: Server) -> tuple[str, int]:
    url = httpx.URL(server.base_url)
    assert url.port is not None
    return url.host, url.port


# Requests answered in every way short of closing (early before the body is read, after validation, and
# a prediction), each followed on the same connection by the next.
KEPT_ALIVE_EXCHANGES = [
    ("POST", "/predict/batch", "text/plain", json.dumps({"rows": [ROW] * 50}).encode(), 415),
    ("POST", "/nowhere", "application/json", json.dumps(ROW).encode(), 404),
    ("PUT", "/predict", "application/json", json.dumps(ROW).encode(), 405),
    ("POST", "/predict", "application/json", b'{"MedInc": NaN}', 422),
    ("POST", "/predict", "application/json", b"{not json", 400),
    ("POST", "/predict", "application/json", b"{}", 422),
    ("POST", "/predict/batch", "application/json", json.dumps({"rows": [ROW] * 1001}).encode(), 422),
    ("POST", "/predict", "application/json", json.dumps(ROW).encode(), 200),
    ("GET", "/livez", "application/json", b"", 200),
]


def test_one_kept_alive_connection_answers_every_kind_of_request_back_to_back(served: Server) -> None:
    """Each answer leaves the connection open and the next request on it is answered, 30 rounds back to
    back (a dropped keep-alive connection shows as an httpx.RemoteProtocolError here)."""
    local_ports = set()
    statuses = []
    with httpx.Client(base_url=served.base_url, timeout=30, limits=httpx.Limits(max_connections=1)) as http:
        for _ in range(30):
            for method, path, content_type, body, _ in KEPT_ALIVE_EXCHANGES:
                response = http.request(method, path, content=body, headers={"content-type": content_type})
                statuses.append(response.status_code)
                local_ports.add(response.extensions["network_stream"].get_extra_info("client_addr")[1])
                assert response.headers.get("connection") != "close", (method, path, response.text[:200])
    assert statuses == [status for *_, status in KEPT_ALIVE_EXCHANGES] * 30
    assert len(local_ports) == 1, local_ports


def test_a_body_that_stops_arriving_gets_408_and_the_connection_closes(served: Server) -> None:
    """The rest of the body never comes: after the request timeout (2 s by default) the real server
    answers 408 with ``Connection: close`` and closes the connection, instead of a 503 after it."""
    with socket.create_connection(address(served), timeout=10) as connection:
        connection.sendall(HALF_A_BODY)
        started = time.monotonic()
        answer = b""
        while chunk := connection.recv(65536):  # until the server closes the connection
            answer += chunk
        took = time.monotonic() - started
    head, _, body = answer.partition(b"\r\n\r\n")
    status, *headers = head.decode().split("\r\n")
    assert status == "HTTP/1.1 408 Request Timeout", answer
    assert "connection: close" in [header.lower() for header in headers]
    assert json.loads(body)["error"]["type"] == "request_timeout"
    # The timeout, not the timeout and then the 5 s drain of a body that was not coming.
    assert 2 <= took < 5, took


def test_a_client_gone_before_its_body_arrived_counts_499_not_a_fault(
    client: httpx.Client, served: Server
) -> None:
    """Headers promising a body, half of it, then the connection closed: the real uvicorn's disconnect."""
    counted = "tabula_http_requests_total"
    before = samples(client)
    with socket.create_connection(address(served), timeout=5) as connection:
        connection.sendall(HALF_A_BODY)
    message = "client disconnected before its request was read"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        # Metrics at once, INFO lines written out at most 0.1 s later.
        after = samples(client)
        gone = value(after, counted, status_code="499") - value(before, counted, status_code="499")
        if gone and message in served.log():
            break
        time.sleep(0.1)

    def delta(status: str) -> float:
        return value(after, counted, route="/predict", status_code=status) - value(
            before, counted, route="/predict", status_code=status
        )

    assert (delta("499"), delta("500")) == (1, 0)
    assert message in served.log()
    assert "unexpected error" not in served.log()


def test_prediction_log_lines_and_database(client: httpx.Client, served: Server, prediction_db: Path) -> None:
    ids = [client.post("/predict", json=ROW).json()["prediction_id"] for _ in range(5)]
    deadline = time.monotonic() + 10
    stored: set[str] = set()
    while time.monotonic() < deadline and not set(ids) <= stored:
        time.sleep(0.2)
        if prediction_db.exists():
            with sqlite3.connect(prediction_db) as db:
                stored = {row[0] for row in db.execute("SELECT prediction_id FROM prediction_log")}
    assert set(ids) <= stored
    log = served.log()
    for prediction_id in ids:
        assert f'"prediction_id": "{prediction_id}"' in log
    assert '"model_version": "' in log
    assert '"latency_ms": ' in log


def test_schemathesis_finds_no_server_errors(served: Server, tmp_path: Path) -> None:
    # Run from tmp: schemathesis keeps a cache folder in its working directory.
    result = subprocess.run(
        [
            sys.executable, "-m", "schemathesis.cli", "run", f"{served.base_url}/openapi.json",
            "--checks", "not_a_server_error", "--max-examples", "40", "--seed", "1",
            "--phases", "examples,coverage,fuzzing", "--workers", "1", "--report-dir", str(tmp_path),
        ],
        cwd=tmp_path, env=unmeasured(), capture_output=True, text=True, timeout=240, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-6000:]
    assert re.search(r"Operations:\s+12 selected / 12 total", result.stdout), result.stdout[-3000:]
    assert re.search(r"[1-9]\d* passed", result.stdout)


@pytest.fixture(scope="module")
def strained(
    broken_golden_model_tag: str, bentoml_home: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """The working tree's service on a model whose golden set is off, with a tiny concurrency limit."""
    log_path = tmp_path_factory.mktemp("logs") / "strained.log"
    env = service_env(server_home(bentoml_home, log_path), concurrency_limit="2", request_timeout_seconds="5")
    server = start_server(
        ["service.service:TabulaService", "--arg", f"model_tag={broken_golden_model_tag}"], env, log_path
    )
    try:
        yield server
    finally:
        stop_server(server)


def test_broken_golden_set_is_alive_but_never_ready(strained: Server) -> None:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        assert httpx.get(f"{strained.base_url}/livez").status_code == 200
        assert httpx.get(f"{strained.base_url}/readyz").status_code == 503
        time.sleep(0.5)
    assert '"ready": false' in strained.log()


def test_excess_load_is_shed_quickly_with_503(strained: Server) -> None:
    body = json.dumps({"rows": [ROW] * 1000}).encode()
    headers = {"content-type": "application/json"}
    shed_before = value(samples(httpx.Client(base_url=strained.base_url)), "tabula_requests_shed_total")

    def post(_: int) -> tuple[int, float, httpx.Response]:
        started = time.perf_counter()
        response = httpx.post(f"{strained.base_url}/predict/batch", content=body, headers=headers, timeout=30)
        return response.status_code, time.perf_counter() - started, response

    with ThreadPoolExecutor(max_workers=24) as pool:
        results = list(pool.map(post, range(96)))
    codes = [code for code, _, _ in results]
    assert set(codes) <= {200, 503}, codes
    shed = [response for code, _, response in results if code == 503]
    assert shed, "no request was shed"
    assert all(r.json()["error"]["type"] == "overloaded" and r.headers["retry-after"] for r in shed)
    # Nothing queues without bound: every request is answered well within the client's patience.
    assert max(seconds for _, seconds, _ in results) < 10
    # Every 503 is counted once, under the reason it was shed for: too many in flight, or too long queued.
    after = samples(httpx.Client(base_url=strained.base_url))
    shed_after = value(after, "tabula_requests_shed_total")
    assert shed_after - shed_before == len(shed)
    reasons = {dict(labels)["reason"] for name, labels in after if name == "tabula_requests_shed_total"}
    assert reasons <= {"concurrency", "queue_timeout"}, reasons


def test_cli_build_errors_are_one_line(registered_model: RegisteredModel, bentoml_home: Path) -> None:
    env = {**service_env(bentoml_home), "MLFLOW_TRACKING_URI": registered_model.tracking_uri}
    missing = run_cli(["build", "--model-name", registered_model.name, "--alias", "nonexistent"], env)
    assert missing.returncode == 4
    assert missing.stderr.strip().count("\n") == 0
    assert "nonexistent" in missing.stderr
    both = run_cli(["build", "--version", "1", "--alias", "production"], env)
    assert both.returncode == 2
    assert both.stderr.startswith("error: ")
