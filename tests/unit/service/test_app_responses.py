"""The ASGI app in-process (httpx ASGITransport): each response counted once, a fault a 500 at once."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from contracts.artifacts import FeatureStatistics
from service.api import PredictionAPI
from service.app import build_app
from service.config import ServiceSettings
from service.model import load_model_dir
from tests.unit.service.conftest import FEATURES, HOUSING, INFO, Lines, model_dir

pytestmark = [pytest.mark.unit, pytest.mark.anyio]

ROW = dict.fromkeys(FEATURES, 5.0) | {"Latitude": 35.0, "Longitude": -120.0}
MAX_BYTES = 4_000


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def api(tmp_path: Path, stats: FeatureStatistics, logged: Lines) -> Iterator[PredictionAPI]:
    """A worker's prediction API on a small real model, as the app finds it under BentoML."""
    model = load_model_dir(model_dir(tmp_path, stats, list(FEATURES)), INFO)
    settings = ServiceSettings(concurrency_limit=1, max_request_bytes=MAX_BYTES, log_predictions=False)
    prediction_api = PredictionAPI(model, settings, logging.getLogger("tabula.service"))
    yield prediction_api
    prediction_api.close()


@pytest.fixture
async def http(api: PredictionAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=build_app(HOUSING, lambda: api))
    async with httpx.AsyncClient(transport=transport, base_url="http://service") as client:
        yield client


def counted(api: PredictionAPI) -> Counter[tuple[str, str]]:
    """tabula_http_requests_total by (route, status_code)."""
    counts: Counter[tuple[str, str]] = Counter()
    for family in api.metrics.http_requests.collect():
        for sample in family.samples:
            if sample.name.endswith("_total"):
                counts[sample.labels["route"], sample.labels["status_code"]] += int(sample.value)
    return counts


def assert_internal_error(response: httpx.Response) -> None:
    assert response.status_code == 500, response.text
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert set(response.json()) == {"error"}
    assert error["type"] == "internal_error"
    assert error["message"]
    assert error["details"] == []


def failures(lines: Lines) -> list[dict[str, Any]]:
    return [line for line in lines.lines if line["level"] == "ERROR"]


def break_predictor(api: PredictionAPI, in_steps: bool = False) -> None:
    """The predictor raises: in one call, or (``in_steps``) in a batch's walk on the loop, after a step."""

    def predict(rows: Any) -> Any:
        raise RuntimeError("predictor broke")

    def steps(rows: Any) -> Any:
        yield
        raise RuntimeError("predictor broke")

    if in_steps:
        assert api.batcher._stepwise is not None
        api.batcher._stepwise = steps
    else:
        api.batcher._predict = predict


def json_post(path: str) -> dict[str, Any]:
    """The ASGI scope uvicorn gives a JSON POST that declares a 400-byte body."""
    headers = [(b"host", b"service"), (b"content-type", b"application/json"), (b"content-length", b"400")]
    return {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
        "headers": headers, "client": ("127.0.0.1", 40000), "server": ("service", 80),
    }  # fmt: skip


@pytest.mark.parametrize(
    ("path", "body", "in_steps"),
    [
        ("/predict", ROW, False),
        ("/predict/batch", {"rows": [ROW, ROW]}, False),
        ("/predict/batch", {"rows": [ROW] * 3}, True),
    ],
    ids=["row", "batch-in-one-call", "batch-in-steps"],
)
async def test_a_fault_in_a_prediction_is_a_structured_500_at_once_logged_once_and_counted(
    http: httpx.AsyncClient,
    api: PredictionAPI,
    logged: Lines,
    path: str,
    body: dict[str, Any],
    in_steps: bool,
) -> None:
    if in_steps:
        api.batcher._inline_rows = 2  # three rows are then a batch walked in steps (over 32 in the service)
    break_predictor(api, in_steps)
    started = time.perf_counter()
    response = await http.post(path, json=body)
    assert time.perf_counter() - started < 1
    assert_internal_error(response)
    [line] = failures(logged)
    assert line["message"] == "unexpected error"
    assert line["path"] == path
    assert (line["model_name"], line["model_version"]) == (INFO.name, INFO.version)
    assert "Traceback" in line["exception"]
    assert "RuntimeError: predictor broke" in line["exception"]
    assert counted(api) == Counter({(path, "500"): 1})
    # The worker is unharmed: the next request is answered and its slot in flight was given back.
    api.batcher._predict = api.model.predict
    api.batcher._stepwise = api.model.stepwise
    assert (await http.post(path, json=body)).status_code == 200


async def test_a_fault_in_a_fastapi_route_is_the_same_500(
    http: httpx.AsyncClient, api: PredictionAPI, logged: Lines, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken_card() -> None:
        raise ValueError("card broke")

    monkeypatch.setattr(api, "model_card", broken_card)
    response = await http.get("/model")
    assert_internal_error(response)
    [line] = failures(logged)
    assert "ValueError: card broke" in line["exception"]
    assert counted(api) == Counter({("/model", "500"): 1})


async def test_every_response_is_counted_exactly_once(http: httpx.AsyncClient, api: PredictionAPI) -> None:
    json_type = {"content-type": "application/json"}
    expected: Counter[tuple[str, str]] = Counter()

    async def send(label: str, method: str, path: str, **kwargs: Any) -> None:
        response = await http.request(method, path, **kwargs)
        expected[label, str(response.status_code)] += 1

    await send("/predict", "POST", "/predict", json=ROW)
    await send("/predict/batch", "POST", "/predict/batch", json={"rows": [ROW] * 3})
    await send("/predict", "POST", "/predict", json={**ROW, "MedInc": "high"})
    await send("/predict", "POST", "/predict", content=b"{not json", headers=json_type)
    await send("/predict", "POST", "/predict", content=b"x", headers={"content-type": "text/plain"})
    await send("/predict/batch", "POST", "/predict/batch", json={"rows": [ROW] * 100})
    await send("/predict", "GET", "/predict")
    await send("/model", "GET", "/model")
    await send("/metrics", "GET", "/metrics")
    await send("/openapi.json", "GET", "/openapi.json")
    await send("unmatched", "GET", "/no/such/path")
    await send("unmatched", "POST", "/predictions", json=ROW)
    assert {status for _, status in expected} == {"200", "400", "404", "405", "413", "415", "422"}

    # Shed: one request holds the only slot (the predictor waits), the next gets 503 at once.
    release = threading.Event()
    predict = api.batcher._predict

    def held(rows: Any) -> Any:
        release.wait(5)
        return predict(rows)

    api.batcher._predict = held
    api.batcher._inline_rows = 0
    api.batcher._stepwise = None  # on the prediction thread, where the predictor can be held
    first = asyncio.create_task(http.post("/predict", json=ROW))
    while api.admission.admitted == 0:
        await asyncio.sleep(0.01)
    shed = await http.post("/predict", json=ROW)
    release.set()
    assert shed.status_code == 503
    assert (await first).status_code == 200
    expected["/predict", "503"] += 1
    expected["/predict", "200"] += 1

    assert counted(api) == expected
    # 12 requests one after another, then the held one and the shed one.
    assert sum(counted(api).values()) == 14


@pytest.mark.parametrize(
    "path", ["/predict", "/predict/batch", f"/v2/models/{INFO.name}/infer"], ids=["row", "batch", "v2"]
)
@pytest.mark.parametrize("sent_first", [b"", b'{"rows": [{"MedInc": 5'], ids=["no-body", "half-a-body"])
async def test_a_client_gone_before_its_body_arrived_is_no_fault_of_the_service(
    http: httpx.AsyncClient, api: PredictionAPI, logged: Lines, path: str, sent_first: bytes
) -> None:
    """uvicorn tells a handler that reads the body of a closed connection ``http.disconnect``, and
    drops whatever it sends after that (``RequestResponseCycle.receive`` and ``send`` in
    uvicorn/protocols/http/httptools_impl.py); Starlette's ``Request.stream`` then raises
    ``ClientDisconnect``. Clients that give up under load (timeouts) do this: it is not a 500 in the
    error-rate series that alerts and canary analysis read, nor an error line with a traceback."""
    messages: list[dict[str, Any]] = []
    if sent_first:
        messages.append({"type": "http.request", "body": sent_first, "more_body": True})
    messages.append({"type": "http.disconnect"})
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await build_app(HOUSING, lambda: api)(json_post(path), receive, send)

    assert sent == []
    assert failures(logged) == []
    [line] = [line for line in logged.lines if line["message"].startswith("client disconnected")]
    assert line["message"] == "client disconnected before its request was read"
    assert (line["level"], line["path"]) == ("INFO", path)
    route = "/v2/models/{name}/infer" if path.startswith("/v2") else path
    assert counted(api) == Counter({(route, "499"): 1})
    # Its place in admission was given back: with room for one request, the next is answered.
    assert api.admission.admitted == 0
    assert (await http.post("/predict", json=ROW)).status_code == 200


@pytest.mark.parametrize(
    "path", ["/predict", "/predict/batch", f"/v2/models/{INFO.name}/infer"], ids=["row", "batch", "v2"]
)
async def test_a_body_that_stops_arriving_is_the_clients_408_not_an_overload(
    tmp_path: Path, stats: FeatureStatistics, path: str
) -> None:
    """Half a body, then nothing (a stalled client or proxy): when the request timeout passes, the answer
    is 408 (RFC 9110, section 15.5.9: the server did not receive a complete request in time) with
    ``Connection: close``, at once, not a 503 counted against the service's error rate."""
    model = load_model_dir(model_dir(tmp_path, stats, list(FEATURES)), INFO)
    settings = ServiceSettings(request_timeout_seconds=0.2, drain_seconds=5.0, log_predictions=False)
    api = PredictionAPI(model, settings, logging.getLogger("tabula.service"))
    messages: list[dict[str, Any]] = [
        {"type": "http.request", "body": b'{"rows": [{"MedInc": 5', "more_body": True}
    ]
    stalled = asyncio.Event()
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        if messages:
            return messages.pop(0)
        await stalled.wait()  # the rest never comes
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    try:
        started = time.perf_counter()
        await asyncio.wait_for(build_app(HOUSING, lambda: api)(json_post(path), receive, send), 3)
        took = time.perf_counter() - started
    finally:
        api.close()

    start, body = sent
    assert start["status"] == 408
    assert (b"connection", b"close") in start["headers"]
    # Answered when the timeout passed, without waiting out the drain of a body that is not coming.
    assert 0.2 <= took < 1.0
    error = json.loads(body["body"])["error"]
    if path.startswith("/v2"):
        assert error == "request body not received within 0.2 s"
    else:
        assert (error["type"], error["message"]) == (
            "request_timeout",
            "request body not received within 0.2 s",
        )
    route = "/v2/models/{name}/infer" if path.startswith("/v2") else path
    assert counted(api) == Counter({(route, "408"): 1})
    assert api.admission.admitted == 0


@pytest.mark.parametrize("fair_share", [True, False])
async def test_admission_shares_the_worker_between_connections_unless_told_not_to(
    tmp_path: Path, stats: FeatureStatistics, fair_share: bool
) -> None:
    """The peer address (host and port: one connection) is the client admission shares the worker
    between; with the fair share off, every request is a client of its own and no peer is remembered."""
    model = load_model_dir(model_dir(tmp_path, stats, list(FEATURES)), INFO)
    settings = ServiceSettings(admission_fair_share=fair_share, log_predictions=False)
    api = PredictionAPI(model, settings, logging.getLogger("tabula.service"))
    peer = ("10.0.0.7", 41234)
    transport = httpx.ASGITransport(app=build_app(HOUSING, lambda: api), client=peer)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://service") as client:
            assert (await client.post("/predict", json=ROW)).status_code == 200
        assert list(api.admission._ends) == ([peer] if fair_share else [])
    finally:
        api.close()
