"""Shadow release in the service (service/shadow.py): pairing, the mirror's sender, and the app's marks.

The mirror posts to a real HTTP server on loopback (a recorder that can be made slow); the app is
driven in-process through httpx's ASGITransport. Classification is paired with injected predictions:
the comparison reads the task from the answers, not from the model.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry

from contracts.artifacts import FeatureStatistics
from service.api import PredictionAPI
from service.app import build_app
from service.config import ServiceSettings
from service.inference_v2 import PREDICTION
from service.model import load_model_dir
from service.shadow import (
    CHAMPION_HEADER,
    MIRROR_HEADER,
    PREDICTION_ID_HEADER,
    Backoff,
    Mirror,
    MirrorControl,
    MirrorMetrics,
    ShadowComparison,
    ShadowMetrics,
    is_mirrored,
    pair,
)
from tests.unit.service.conftest import FEATURES, HOUSING, INFO, Lines, model_dir

pytestmark = [pytest.mark.unit]

ROW = dict.fromkeys(FEATURES, 5.0) | {"Latitude": 35.0, "Longitude": -120.0}
LABELS = {"model_name": "housing-price", "model_version": "2"}


def samples(metric: Any) -> dict[tuple[str, ...], float]:
    """Sample values of an unregistered metric by (sample name, *label values beyond the model's)."""
    found: dict[tuple[str, ...], float] = {}
    for family in metric.collect():
        for sample in family.samples:
            extra = tuple(v for k, v in sample.labels.items() if k not in LABELS)
            found[(sample.name, *extra)] = sample.value
    return found


class QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that gave up (the mirror's timeout) breaks the pipe: expected here, not printed."""


class Recorder:
    """A loopback HTTP server that records each POST (path, headers, body) and answers after ``delay``."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.received: list[tuple[str, dict[str, str], bytes]] = []
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                time.sleep(recorder.delay)
                recorder.received.append((self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(200)
                self.send_header("content-length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, format: str, *args: Any) -> None:
                del format, args

        self.server = QuietServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    server = Recorder()
    yield server
    server.close()


def make_mirror(
    url: str | None,
    rate: float = 1.0,
    *,
    control_file: Path | None = None,
    queue_size: int = 100,
    senders: int = 1,
    timeout: float = 1.0,
    backoff: float = 60.0,
) -> tuple[Mirror, MirrorMetrics]:
    metrics = MirrorMetrics(LABELS, registry=CollectorRegistry())
    mirror = Mirror(
        MirrorControl(url, rate),
        control_file,
        0.01,
        queue_size,
        senders,
        timeout,
        Backoff(backoff, backoff * 4),
        metrics,
        logging.getLogger("test.mirror"),
    )
    return mirror, metrics


class Answer:
    """A response model as the service returns it: ``prediction`` or ``predictions``."""

    def __init__(self, **fields: Any) -> None:
        self.__dict__.update(fields)


def wait_for(condition: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def dropped(metrics: MirrorMetrics) -> Counter[str]:
    counts: Counter[str] = Counter()
    for (name, *reason), value in samples(metrics._dropped).items():
        if name.endswith("_total"):
            counts[reason[0]] += int(value)
    return counts


# --- pairing -------------------------------------------------------------------------------------


def test_numbers_pair_as_absolute_and_relative_differences() -> None:
    pairing = pair([2.0, 1.0, 0.0], [2.5, 1.0, 0.25])
    assert pairing.pairs == 3
    assert pairing.abs_differences == (0.5, 0.0, 0.25)
    assert pairing.rel_differences[:2] == (0.25, 0.0)
    assert pairing.rel_differences[2] > 1e6  # against a zero answer: huge, never a division by zero
    assert pairing.swaps == ()


def test_labels_pair_as_agreements_and_swaps() -> None:
    pairing = pair(["setosa", "versicolor", "virginica"], ["setosa", "virginica", "versicolor"])
    assert pairing.pairs == 3
    assert pairing.swaps == (("versicolor", "virginica"), ("virginica", "versicolor"))
    assert pairing.abs_differences == ()


@pytest.mark.parametrize(
    ("champion", "shadow", "reason"),
    [
        ([1.0, 2.0], [1.0], "count_mismatch"),
        (["a"], [1.0], "type_mismatch"),
        ([True], [1.0], "type_mismatch"),
    ],
)
def test_answers_that_cannot_be_paired_say_why(champion: list[Any], shadow: list[Any], reason: str) -> None:
    pairing = pair(champion, shadow)
    assert (pairing.pairs, pairing.unpaired) == (0, reason)


def comparison(logged_lines: bool = True) -> ShadowComparison:
    return ShadowComparison(
        ShadowMetrics(LABELS, registry=CollectorRegistry()),
        logging.getLogger("tabula.service"),
        logged_lines,
    )


def test_a_regression_pair_is_recorded_and_logged_with_its_prediction_id(logged: Lines) -> None:
    shadow = comparison()
    headers = {CHAMPION_HEADER: "[1.0,2.0]", PREDICTION_ID_HEADER: "abc"}
    shadow.compare(headers.get, Answer(predictions=[1.5, 2.0]))
    metrics = shadow.metrics
    assert samples(metrics.pairs)[("tabula_shadow_pairs_total",)] == 2
    absolute = samples(metrics.abs_difference)
    assert absolute[("tabula_shadow_abs_difference_count",)] == 2
    assert absolute[("tabula_shadow_abs_difference_sum",)] == 0.5
    assert absolute[("tabula_shadow_abs_difference_bucket", "0.001")] == 1  # the equal answer
    assert absolute[("tabula_shadow_abs_difference_bucket", "0.5")] == 2
    assert samples(metrics.rel_difference)[("tabula_shadow_rel_difference_sum",)] == 0.5
    [line] = [line for line in logged.lines if line["message"] == "shadow pair"]
    assert line["prediction_id"] == "abc"
    assert (line["champion"], line["shadow"], line["abs_differences"]) == ([1.0, 2.0], [1.5, 2.0], [0.5, 0.0])


def test_a_classifier_that_swaps_two_classes_counts_each_swap_by_class() -> None:
    shadow = comparison(logged_lines=False)
    champion = ["setosa", "versicolor", "virginica", "versicolor"]
    answered = ["setosa", "virginica", "versicolor", "virginica"]
    shadow.compare({CHAMPION_HEADER: json.dumps(champion)}.get, Answer(predictions=answered))
    shadow.compare({CHAMPION_HEADER: '["setosa"]'}.get, Answer(prediction="setosa"))
    metrics = shadow.metrics
    assert samples(metrics.pairs)[("tabula_shadow_pairs_total",)] == 5
    swaps = {k[1:]: v for k, v in samples(metrics.disagreements).items() if k[0].endswith("_total")}
    assert swaps == {("versicolor", "virginica"): 2, ("virginica", "versicolor"): 1}
    assert samples(metrics.abs_difference).get(("tabula_shadow_abs_difference_count",), 0) == 0


@pytest.mark.parametrize("header", [None, "not json", '{"a": 1}'])
def test_a_copy_without_a_readable_champion_answer_is_unpaired(header: str | None) -> None:
    shadow = comparison(logged_lines=False)
    headers = {} if header is None else {CHAMPION_HEADER: header}
    shadow.compare(headers.get, Answer(prediction=1.0))
    assert samples(shadow.metrics.unpaired)[("tabula_shadow_unpaired_total", "no_champion_answer")] == 1
    assert samples(shadow.metrics.pairs).get(("tabula_shadow_pairs_total",), 0) == 0


def test_the_mark_is_read_from_the_asgi_headers() -> None:
    assert is_mirrored([(b"host", b"x"), (b"x-tabula-mirror", b"1")])
    assert not is_mirrored([(b"x-tabula-mirror", b"0")])
    assert not is_mirrored([(b"host", b"x")])


# --- the mirror's sender ---------------------------------------------------------------------------


def test_a_copy_carries_the_body_the_champion_answer_and_the_prediction_id(recorder: Recorder) -> None:
    mirror, metrics = make_mirror(recorder.url + "/")
    mirror.offer("/predict", b'{"x": 1}', Answer(prediction=1.25), "id-1")
    wait_for(lambda: len(recorder.received) == 1)
    path, headers, body = recorder.received[0]
    assert (path, body) == ("/predict", b'{"x": 1}')
    assert headers[MIRROR_HEADER.lower()] == "1"
    assert json.loads(headers[CHAMPION_HEADER.lower()]) == [1.25]
    assert headers[PREDICTION_ID_HEADER.lower()] == "id-1"
    wait_for(lambda: samples(metrics._sent).get(("tabula_mirror_sent_total",)) == 1)
    mirror.close()


def test_the_sample_rate_and_target_follow_the_control_file(tmp_path: Path, recorder: Recorder) -> None:
    control = tmp_path / "mirror.json"
    mirror, _ = make_mirror(None, control_file=control)
    mirror.offer("/predict", b"{}", Answer(prediction=1.0), None)
    control.write_text(json.dumps({"url": recorder.url, "sampleRate": 1.0}))
    time.sleep(0.02)
    mirror.offer("/predict", b"{}", Answer(prediction=1.0), None)
    wait_for(lambda: len(recorder.received) == 1)
    control.write_text(json.dumps({"url": recorder.url, "sampleRate": 0.0}))
    time.sleep(0.02)
    for _ in range(20):
        mirror.offer("/predict", b"{}", Answer(prediction=1.0), None)
    control.write_text("{broken")  # a torn or broken file keeps the settings' default: no target
    time.sleep(0.02)
    mirror.offer("/predict", b"{}", Answer(prediction=1.0), None)
    mirror.close()
    assert len(recorder.received) == 1
    assert mirror.control == MirrorControl(None, 1.0)


def test_a_sample_rate_mirrors_about_that_share(recorder: Recorder) -> None:
    mirror, _ = make_mirror(recorder.url, rate=0.25, senders=2)
    for _ in range(400):
        mirror.offer("/predict", b"{}", Answer(prediction=1.0), None)
    wait_for(lambda: mirror._queue.empty())
    mirror.close()
    assert 60 <= len(recorder.received) <= 140  # binomial(400, 0.25): mean 100, sd 8.7


def test_an_unreachable_shadow_is_backed_off_and_every_drop_counted() -> None:
    with ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler) as closed:
        url = f"http://127.0.0.1:{closed.server_address[1]}"  # nothing listens once closed
    mirror, metrics = make_mirror(url)
    started = time.perf_counter()
    for _ in range(50):
        mirror.offer("/predict", b"{}", Answer(prediction=1.0), None)
    offering = time.perf_counter() - started
    wait_for(lambda: sum(dropped(metrics).values()) == 50)
    mirror.close()
    counts = dropped(metrics)
    assert counts["unreachable"] >= 1
    assert counts["unreachable"] + counts["backoff"] == 50
    assert offering < 0.05, f"offering 50 copies took {offering:.3f}s"


def test_a_new_shadow_in_the_control_file_is_not_held_back_by_the_previous_ones_backoff(
    tmp_path: Path, recorder: Recorder
) -> None:
    with ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler) as closed:
        gone = f"http://127.0.0.1:{closed.server_address[1]}"
    control = tmp_path / "mirror.json"
    control.write_text(json.dumps({"url": gone, "sampleRate": 1.0}))
    mirror, metrics = make_mirror(None, control_file=control)  # a 60 s backoff once unreachable
    mirror.offer("/predict", b"{}", Answer(prediction=1.0), None)
    wait_for(lambda: dropped(metrics)["unreachable"] == 1)
    control.write_text(json.dumps({"url": recorder.url, "sampleRate": 1.0}))
    time.sleep(0.02)
    mirror.offer("/predict", b"{}", Answer(prediction=1.0), None)
    wait_for(lambda: len(recorder.received) == 1)
    mirror.close()
    assert dropped(metrics) == Counter({"unreachable": 1})


def test_a_slow_shadow_fills_the_queue_and_times_out_without_blocking_the_caller() -> None:
    slow = Recorder(delay=1.0)
    mirror, metrics = make_mirror(slow.url, queue_size=2, senders=1, timeout=0.3)
    started = time.perf_counter()
    for _ in range(20):
        mirror.offer("/predict", b"{}", Answer(prediction=1.0), None)
    offering = time.perf_counter() - started
    wait_for(lambda: sum(dropped(metrics).values()) == 20, timeout=5)
    mirror.close()
    slow.close()
    counts = dropped(metrics)
    # One copy in flight and two queued at most; every other one dropped at once.
    assert counts["queue_full"] >= 17
    assert counts["timeout"] == 20 - counts["queue_full"]
    assert offering < 0.05, f"offering 20 copies took {offering:.3f}s"


# --- the app: marks, series, loops ---------------------------------------------------------------


@pytest.fixture
def api(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    stats: FeatureStatistics,
    logged: Lines,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[PredictionAPI]:
    """A worker of a shadow pod (shadow_track), unless parametrized indirectly with False."""
    model = load_model_dir(model_dir(tmp_path, stats, list(FEATURES)), INFO)
    settings = ServiceSettings(shadow_track=getattr(request, "param", True))
    prediction_api = PredictionAPI(model, settings, logging.getLogger("tabula.service"))
    yield prediction_api
    prediction_api.close()


@pytest.fixture
async def http(api: PredictionAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=build_app(HOUSING, lambda: api))
    async with httpx.AsyncClient(transport=transport, base_url="http://service") as client:
        yield client


def live_requests(api: PredictionAPI) -> int:
    return int(sum(v for k, v in samples(api.metrics.http_requests).items() if k[0].endswith("_total")))


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
async def test_a_live_answer_is_mirrored_after_it_was_sent_with_its_prediction_id(
    api: PredictionAPI, http: httpx.AsyncClient, recorder: Recorder
) -> None:
    api.mirror, _ = make_mirror(recorder.url)
    response = await http.post("/predict", json=ROW)
    assert response.status_code == 200
    batch = await http.post("/predict/batch", json={"rows": [ROW, ROW]})
    wait_for(lambda: len(recorder.received) == 2)
    [(path, headers, body), (batch_path, batch_headers, _)] = sorted(recorder.received)
    assert (path, json.loads(body)) == ("/predict", ROW)
    assert headers[PREDICTION_ID_HEADER.lower()] == response.json()["prediction_id"]
    assert json.loads(headers[CHAMPION_HEADER.lower()]) == [response.json()["prediction"]]
    assert batch_path == "/predict/batch"
    assert json.loads(batch_headers[CHAMPION_HEADER.lower()]) == batch.json()["predictions"]
    assert live_requests(api) == 2


@pytest.mark.anyio
async def test_an_open_inference_request_is_mirrored_as_the_batch_request_it_equals(
    api: PredictionAPI, http: httpx.AsyncClient, recorder: Recorder
) -> None:
    """The shadow pairs /predict/batch answers: a v2 infer of the same rows reaches it as one."""
    api.mirror, _ = make_mirror(recorder.url)
    infer = {"id": "7", "inputs": [{"name": name, "shape": [2], "datatype": "FP64", "data": [ROW[name]] * 2}
                                   for name in FEATURES]}  # fmt: skip
    response = await http.post(f"/v2/models/{INFO.name}/infer", json=infer)
    assert response.status_code == 200, response.text
    answered = response.json()
    wait_for(lambda: len(recorder.received) == 1)
    [(path, headers, body)] = recorder.received
    assert (path, json.loads(body)) == ("/predict/batch", {"rows": [ROW, ROW]})
    [predictions] = [output["data"] for output in answered["outputs"] if output["name"] == PREDICTION]
    assert json.loads(headers[CHAMPION_HEADER.lower()]) == predictions
    assert headers[PREDICTION_ID_HEADER.lower()] == answered["parameters"]["prediction_id"]
    # On the shadow, the copy is paired like any batch copy and never mirrored again.
    marks = {name: headers[name.lower()] for name in (MIRROR_HEADER, CHAMPION_HEADER, PREDICTION_ID_HEADER)}
    copy = await http.post(
        "/predict/batch", content=body, headers={"content-type": "application/json", **marks}
    )
    assert copy.status_code == 200
    assert samples(api.shadow.metrics.abs_difference)[("tabula_shadow_abs_difference_count",)] == 2
    time.sleep(0.2)
    assert len(recorder.received) == 1


@pytest.mark.anyio
async def test_a_mirrored_request_is_paired_never_mirrored_again_and_kept_out_of_the_live_series(
    api: PredictionAPI, http: httpx.AsyncClient, recorder: Recorder, logged: Lines
) -> None:
    api.mirror, _ = make_mirror(recorder.url)
    live = (await http.post("/predict", json=ROW)).json()
    wait_for(lambda: len(recorder.received) == 1)
    _, headers, body = recorder.received[0]
    marks = {name: headers[name.lower()] for name in (MIRROR_HEADER, CHAMPION_HEADER, PREDICTION_ID_HEADER)}
    marks[CHAMPION_HEADER] = json.dumps([live["prediction"] + 0.5])
    copy = await http.post("/predict", content=body, headers={"content-type": "application/json", **marks})
    assert copy.status_code == 200
    refused = await http.post(
        "/predict", content=b"[]", headers={"content-type": "application/json", **marks}
    )
    assert refused.status_code == 422
    time.sleep(0.2)
    assert len(recorder.received) == 1  # the copies were not mirrored again
    assert live_requests(api) == 1
    assert samples(api.metrics.predictions)[("tabula_predictions_total", "/predict")] == 1
    shadow = api.shadow.metrics
    statuses = {k[2]: v for k, v in samples(shadow.requests).items() if k[0].endswith("_total")}
    assert statuses == {"200": 1, "422": 1}
    assert samples(shadow.duration)[("tabula_shadow_request_duration_seconds_count", "/predict")] == 2
    assert samples(shadow.abs_difference)[("tabula_shadow_abs_difference_sum",)] == pytest.approx(0.5)
    [pair_line] = [line for line in logged.lines if line["message"] == "shadow pair"]
    assert pair_line["prediction_id"] == live["prediction_id"]


@pytest.mark.anyio
@pytest.mark.parametrize("api", [False], indirect=True, ids=["serving-pod"])
async def test_on_a_serving_pod_the_mark_only_stops_mirroring_and_the_request_counts_as_live(
    api: PredictionAPI, http: httpx.AsyncClient, recorder: Recorder
) -> None:
    """A client sending the mark cannot hide its requests from the live SLO series."""
    api.mirror, _ = make_mirror(recorder.url)
    response = await http.post("/predict", json=ROW, headers={MIRROR_HEADER: "1"})
    assert response.status_code == 200
    time.sleep(0.2)
    assert recorder.received == []
    assert live_requests(api) == 1
    assert samples(api.shadow.metrics.requests) == {}
