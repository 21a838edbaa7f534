"""The Open Inference Protocol (service/inference_v2.py) in-process, for both tasks.

Requests are built and answers read by ``tritonclient``'s own encoder and decoder
(``InferenceServerClient.generate_request_body`` / ``parse_response_body``), so the binary tensor
data extension is exercised as the real client speaks it; JSON requests are the protocol's REST form
(the Open Inference Protocol's ``rest_predict_v2.yaml``). The answers are compared with the
service's own ``/predict/batch`` for the same rows, and the metrics and log with what ``/predict``
records.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
import re
import zlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import numpy as np
import pytest
import tritonclient.http as triton
from prometheus_client import CollectorRegistry
from sklearn.ensemble import HistGradientBoostingClassifier

from contracts.model import FeatureSpec, ModelContract
from service.api import PredictionAPI
from service.app import build_app
from service.config import ServiceSettings
from service.errors import InvalidTensorError
from service.inference_v2 import BinaryData, InferenceRequest, RowReader, output_tensors
from service.metrics import ServiceMetrics
from service.model import load_model_dir
from tests.unit.service.conftest import (
    FEATURES,
    HOUSING,
    INFO,
    IRIS,
    IRIS_LABELS,
    Lines,
    hand_made_stats,
    iris_frame,
    iris_model_dir,
    model_dir,
)

pytestmark = [pytest.mark.unit, pytest.mark.anyio]

INFER = "/v2/models/housing-price/infer"
INFER_ROUTE = "/v2/models/{name}/infer"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@dataclass
class Served:
    contract: ModelContract
    api: PredictionAPI
    http: httpx.AsyncClient
    rows: np.ndarray

    async def predicted(self, rows: np.ndarray) -> dict[str, Any]:
        """The service's own /predict/batch answer for ``rows`` (contract order)."""
        names = self.contract.feature_names
        body = {"rows": [dict(zip(names, row, strict=True)) for row in rows.tolist()]}
        response = await self.http.post("/predict/batch", json=body)
        assert response.status_code == 200, response.text
        answer: dict[str, Any] = response.json()
        return answer

    async def infer(
        self,
        inputs: list[triton.InferInput],
        outputs: list[triton.InferRequestedOutput] | None = None,
        path: str = INFER,
        **parameters: Any,
    ) -> triton.InferResult:
        """An inference request as tritonclient encodes it, its answer as tritonclient decodes it."""
        body, json_size = triton.InferenceServerClient.generate_request_body(
            inputs, outputs=outputs, request_id="req-7", parameters=parameters or None
        )
        headers = {} if json_size is None else {"Inference-Header-Content-Length": str(json_size)}
        response = await self.http.post(path, content=body, headers=headers)
        assert response.status_code == 200, response.text
        length = response.headers.get("Inference-Header-Content-Length")
        return triton.InferenceServerClient.parse_response_body(
            response.content, header_length=int(length) if length is not None else None
        )


async def serve(
    path: Path, contract: ModelContract, rows: np.ndarray, **settings: Any
) -> AsyncIterator[Served]:
    model = load_model_dir(path, INFO)
    settings = {"log_predictions": False, **settings}
    api = PredictionAPI(model, ServiceSettings(**settings), logging.getLogger("tabula.service"))
    transport = httpx.ASGITransport(app=build_app(contract, lambda: api))
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://service") as http:
            yield Served(contract, api, http, rows)
    finally:
        api.close()


def house_rows() -> np.ndarray:
    rng = np.random.default_rng(3)
    low = np.array([1.0, 1.0, 1.0, 0.5, 10.0, 1.0, 33.0, -123.0])
    high = np.array([9.0, 50.0, 9.0, 3.0, 3000.0, 6.0, 41.0, -115.0])
    return rng.uniform(low, high, size=(5, len(FEATURES)))


@pytest.fixture(scope="module")
def housing_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return model_dir(tmp_path_factory.mktemp("tabula"), hand_made_stats(), FEATURES)


@pytest.fixture(scope="module")
def iris_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    estimator = HistGradientBoostingClassifier(max_iter=10, max_leaf_nodes=7, random_state=0)
    return iris_model_dir(tmp_path_factory.mktemp("iris"), estimator)


@pytest.fixture
async def housing(housing_dir: Path) -> AsyncIterator[Served]:
    async for served in serve(housing_dir, HOUSING, house_rows()):
        yield served


@pytest.fixture
async def iris(iris_dir: Path) -> AsyncIterator[Served]:
    frame, _ = iris_frame()
    async for served in serve(iris_dir, IRIS, frame.iloc[::30].to_numpy()):
        yield served


@pytest.fixture(params=["housing", "iris"])
async def either(request: pytest.FixtureRequest, housing_dir: Path, iris_dir: Path) -> AsyncIterator[Served]:
    if request.param == "housing":
        async for served in serve(housing_dir, HOUSING, house_rows()):
            yield served
    else:
        frame, _ = iris_frame()
        async for served in serve(iris_dir, IRIS, frame.iloc[::30].to_numpy()):
            yield served


def tensor(
    rows: np.ndarray, datatype: str = "FP64", binary: bool = True, name: str = "input"
) -> triton.InferInput:
    dtype = {"FP64": np.float64, "FP32": np.float32}[datatype]
    infer_input = triton.InferInput(name, list(rows.shape), datatype)
    infer_input.set_data_from_numpy(rows.astype(dtype), binary_data=binary)
    return infer_input


def labels_of(result: triton.InferResult) -> list[str]:
    """Class labels of a BYTES output: bytes when sent as binary data, text when sent as JSON."""
    return [label.decode() if isinstance(label, bytes) else label for label in result.as_numpy("prediction")]


def assert_same_answer(served: Served, result: triton.InferResult, expected: dict[str, Any]) -> None:
    predictions = result.as_numpy("prediction")
    if served.contract.task == "regression":
        assert predictions.dtype == np.float64
        assert predictions.tolist() == expected["predictions"]
    else:
        assert labels_of(result) == expected["predictions"]
        probabilities = result.as_numpy("probabilities")
        assert probabilities.shape == (len(expected["predictions"]), len(IRIS_LABELS))
        assert probabilities.tolist() == [
            [row[label] for label in IRIS_LABELS] for row in expected["probabilities"]
        ]


# --- health, metadata ---------------------------------------------------------------------------------------


async def test_health_and_readiness_follow_the_golden_set(housing: Served) -> None:
    live = await housing.http.get("/v2/health/live")
    assert (live.status_code, live.json()) == (200, {"live": True})
    for path in (
        "/v2/health/ready",
        "/v2/models/housing-price/ready",
        "/v2/models/housing-price/versions/1/ready",
    ):
        response = await housing.http.get(path)
        assert response.status_code == 503, path
        assert response.json()["ready"] is False
    assert housing.api.golden_set_reproduces()
    assert (await housing.http.get("/v2/health/ready")).json() == {"ready": True}
    ready = await housing.http.get("/v2/models/housing-price/ready")
    assert (ready.status_code, ready.json()) == (200, {"name": "housing-price", "ready": True})


async def test_server_metadata_names_the_binary_extension(housing: Served) -> None:
    response = await housing.http.get("/v2")
    assert response.json() == {"name": "tabula", "version": "1", "extensions": ["binary_tensor_data"]}


@pytest.mark.parametrize("path", ["/v2/models/housing-price", "/v2/models/housing-price/versions/1"])
async def test_model_metadata_comes_from_the_contract(either: Served, path: str) -> None:
    metadata = (await either.http.get(path)).json()
    contract = either.contract
    assert metadata["name"] == "housing-price"
    assert metadata["versions"] == ["1"]
    assert metadata["platform"] == "scikit-learn"
    assert metadata["inputs"] == [
        {"name": "input", "datatype": "FP64", "shape": [-1, len(contract.features)]}
    ]
    assert [feature["name"] for feature in metadata["features"]] == contract.feature_names
    assert metadata["parameters"]["task"] == contract.task
    if contract.task == "regression":
        assert metadata["outputs"] == [{"name": "prediction", "datatype": "FP64", "shape": [-1]}]
        latitude = metadata["features"][FEATURES.index("Latitude")]
        declared = next(f for f in contract.features if f.name == "Latitude")
        assert (latitude["minimum"], latitude["maximum"]) == (declared.minimum, declared.maximum)
    else:
        assert metadata["outputs"] == [
            {"name": "prediction", "datatype": "BYTES", "shape": [-1]},
            {"name": "probabilities", "datatype": "FP64", "shape": [-1, 3]},
        ]
        assert metadata["class_labels"] == IRIS_LABELS


@pytest.mark.parametrize(
    ("method", "path", "status", "words"),
    [
        ("GET", "/v2/models/other", 404, "unknown model 'other'"),
        ("GET", "/v2/models/housing-price/versions/2", 404, "no version '2'"),
        ("GET", "/v2/models/other/ready", 404, "unknown model"),
        ("POST", "/v2/models/other/infer", 404, "unknown model"),
        ("POST", "/v2/models/housing-price/versions/9/infer", 404, "no version '9'"),
        ("GET", "/v2/models/housing-price/infer", 405, "takes POST"),
        ("POST", "/v2/health/live", 405, "takes GET"),
        ("GET", "/v2/repository/index", 404, "no such Open Inference Protocol path"),
    ],
)
async def test_unknown_models_versions_and_paths(
    housing: Served, method: str, path: str, status: int, words: str
) -> None:
    response = await housing.http.request(method, path, json={"inputs": []} if method == "POST" else None)
    assert response.status_code == status
    assert words in response.json()["error"]
    if status == 405:  # RFC 9110: a 405 lists the methods the path serves
        assert response.headers["allow"] == ("POST" if path.endswith("/infer") else "GET, HEAD")


# --- inference: same numbers as /predict ---------------------------------------------------------------


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
async def test_tensor_input_answers_what_predict_answers(either: Served, binary: bool) -> None:
    expected = await either.predicted(either.rows)
    outputs = [
        triton.InferRequestedOutput(t.name, binary_data=binary) for t in output_tensors(either.contract)
    ]
    result = await either.infer([tensor(either.rows, binary=binary)], outputs)
    assert_same_answer(either, result, expected)
    response = result.get_response()
    assert response["id"] == "req-7"
    assert (response["model_name"], response["model_version"]) == ("housing-price", "1")


async def test_tritonclient_defaults_ask_for_binary_outputs(either: Served) -> None:
    """No outputs named: tritonclient sets binary_data_output, and every output comes back binary."""
    expected = await either.predicted(either.rows)
    result = await either.infer([tensor(either.rows)])
    assert all("binary_data_size" in output["parameters"] for output in result.get_response()["outputs"])
    assert_same_answer(either, result, expected)


async def test_fp32_tensor_is_read_as_32_bit_floats(either: Served) -> None:
    rounded = either.rows.astype(np.float32).astype(np.float64)
    expected = await either.predicted(rounded)
    for binary in (True, False):
        assert_same_answer(either, await either.infer([tensor(either.rows, "FP32", binary)]), expected)


@pytest.mark.parametrize("shape", ["flat", "column"])
async def test_one_input_per_feature_column(either: Served, shape: str) -> None:
    expected = await either.predicted(either.rows)
    columns = []
    # Reversed: the feature inputs are matched by name, not by position.
    for index, name in reversed(list(enumerate(either.contract.feature_names))):
        values = either.rows[:, index] if shape == "flat" else either.rows[:, [index]]
        columns.append(tensor(values, binary=index % 2 == 0, name=name))
    assert_same_answer(either, await either.infer(columns, content_type="pd"), expected)


async def test_json_request_without_a_client(housing: Served) -> None:
    """The protocol's plain JSON form (as curl sends it): nested data, no binary anywhere."""
    rows = housing.rows[:2]
    body = {"inputs": [{"name": "input", "shape": [2, 8], "datatype": "FP64", "data": rows.tolist()}]}
    response = await housing.http.post(INFER, json=body)
    assert response.headers["content-type"] == "application/json"
    answer = response.json()
    assert answer["outputs"] == [
        {
            "name": "prediction",
            "datatype": "FP64",
            "shape": [2],
            "data": (await housing.predicted(rows))["predictions"],
        }
    ]
    assert answer["id"] == answer["parameters"]["prediction_id"]


async def test_range_warnings_travel_in_the_parameters(housing: Served) -> None:
    rows = housing.rows[:2].copy()
    rows[1, FEATURES.index("AveRooms")] = 25.0  # beyond the training range [0, 20], inside the hard limits
    result = await housing.infer([tensor(rows)])
    warnings = json.loads(result.get_response()["parameters"]["warnings"])
    assert [(w["feature"], w["value"], w["row"]) for w in warnings] == [("AveRooms", 25.0, 1)]


# --- client mistakes ----------------------------------------------------------------------------------------

ROW = [5.0, 20.0, 5.0, 1.0, 1000.0, 3.0, 35.0, -120.0]


def body_with(**tensor_fields: Any) -> dict[str, Any]:
    return {"inputs": [{"name": "input", "shape": [1, 8], "datatype": "FP64", "data": ROW, **tensor_fields}]}


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (body_with(shape=[8]), "has shape [8]; send [N, 8]"),
        (body_with(shape=[1, 7], data=ROW[:7]), "has shape [1, 7]"),
        (body_with(shape=[2, 8]), "has 8 values, its shape [2, 8] holds 16"),
        (body_with(datatype="BYTES", data=["a"] * 8), "datatype BYTES; send FP64 or FP32"),
        (body_with(datatype="BOOL", data=[True] * 8), "datatype BOOL"),
        (body_with(data=[*ROW[:7], "x"]), "not numbers"),
        (body_with(data=[*ROW[:7], None]), "a JSON client may write NaN as null"),
        (body_with(data=[*ROW[:7], True]), "not numbers"),
        (body_with(data=[ROW[:4], ROW[4:7]]), "not a regular array"),
        (
            body_with(data=[*ROW[:6], 55.0, -120.0]),
            "feature 'Latitude': 55.0 is not within the feature's bounds",
        ),
        (body_with(datatype="INT64", data=[*ROW[:7], -120.5]), "INT64 but holds fractions"),
        (body_with(name="features"), "unknown input(s) 'features'"),
        (body_with(shape=[0, 8], data=[]), "between 1 and"),
        (body_with(parameters={"binary_data_size": 64}, data=None), "no Inference-Header-Content-Length"),
        (body_with(parameters={"binary_data_size": 64}), "both data and binary_data_size"),
        ({"inputs": []}, "inputs: List should have at least 1 item"),
        ({"inputs": "x"}, "not an inference request"),
        ({**body_with(), "outputs": [{"name": "value"}]}, "unknown output 'value'"),
        (
            {**body_with(), "outputs": [{"name": "prediction", "parameters": {"class_count": 2}}]},
            "class_count",
        ),
        ({**body_with(), "parameters": {"content_type": "csv"}}, "content_type 'csv' is not served"),
    ],
)
async def test_bad_json_tensors_are_400_with_a_reason(
    housing: Served, body: dict[str, Any], words: str
) -> None:
    response = await housing.http.post(INFER, content=json.dumps(body))
    assert response.status_code == 400, response.text
    assert response.headers["content-type"] == "application/json"
    assert words in response.json()["error"]


@pytest.mark.parametrize(
    ("inputs", "words"),
    [
        ({"MedInc": [1.0]}, "missing feature input(s): 'HouseAge'"),
        ({name: [1.0] for name in [*FEATURES, "Color"]}, "unknown input(s) 'Color'"),
        ({name: [1.0] * (2 if name == "MedInc" else 1) for name in FEATURES}, "different row counts"),
    ],
)
async def test_bad_feature_columns_are_400(
    housing: Served, inputs: dict[str, list[float]], words: str
) -> None:
    body = {
        "parameters": {"content_type": "pd"},
        "inputs": [{"name": n, "shape": [len(v)], "datatype": "FP64", "data": v} for n, v in inputs.items()],
    }
    response = await housing.http.post(INFER, json=body)
    assert response.status_code == 400
    assert words in response.json()["error"]


@pytest.mark.parametrize(
    ("content", "headers", "status", "words"),
    [
        (b'{"inputs": [', {}, 400, "not valid JSON"),
        (b"", {}, 400, "empty"),
        (b'{"inputs": [{"name": "input", "shape": [1, 8], "datatype": "FP64", "data": [NaN'
         + b", 1.0" * 7 + b"]}]}", {}, 400, "is not a finite number"),
        (b"{}", {"Inference-Header-Content-Length": "99"}, 400, "not a byte count"),
        (b"{}", {"Content-Encoding": "br"}, 415, "Content-Encoding br is not served"),
        (b"{}", {"Content-Encoding": "gzip"}, 400, "not valid gzip data"),
    ],
)  # fmt: skip
async def test_bad_bodies(
    housing: Served, content: bytes, headers: dict[str, str], status: int, words: str
) -> None:
    response = await housing.http.post(INFER, content=content, headers=headers)
    assert response.status_code == status
    assert words in response.json()["error"]


def _binary_request(
    rows: np.ndarray, extra: bytes = b"", size_delta: int = 0
) -> tuple[bytes, dict[str, str]]:
    header = json.dumps(
        {"inputs": [{"name": "input", "shape": list(rows.shape), "datatype": "FP64",
                     "parameters": {"binary_data_size": rows.nbytes + size_delta}}]}
    ).encode()  # fmt: skip
    return header + rows.astype("<f8").tobytes() + extra, {
        "Inference-Header-Content-Length": str(len(header))
    }


@pytest.mark.parametrize(
    ("rows", "extra", "size_delta", "words"),
    [
        (np.array([[*ROW[:7], np.nan]]), b"", 0, "feature 'Longitude': nan is not a finite number"),
        (np.array([[np.inf, *ROW[1:]]]), b"", 0, "feature 'MedInc': inf is not a finite number"),
        (np.array([ROW]), b"\0" * 8, 0, "8 bytes of binary data follow"),
        (np.array([ROW]), b"", 8, "runs past the end"),
        (np.array([ROW]), b"\0" * 8, 8, "72 bytes of binary data, its shape [1, 8] of FP64 takes 64"),
    ],
)
async def test_bad_binary_tensors_are_400(
    housing: Served, rows: np.ndarray, extra: bytes, size_delta: int, words: str
) -> None:
    content, headers = _binary_request(rows, extra, size_delta)
    response = await housing.http.post(INFER, content=content, headers=headers)
    assert response.status_code == 400
    assert words in response.json()["error"]


async def test_too_many_rows(housing_dir: Path) -> None:
    async for served in serve(housing_dir, HOUSING, house_rows(), max_batch_rows=3):
        content, headers = _binary_request(served.rows[:4])
        response = await served.http.post(INFER, content=content, headers=headers)
        assert (response.status_code, response.json()) == (400, {"error": "send between 1 and 3 rows, got 4"})


# --- accounting ----------------------------------------------------------------------------------------


def own_metrics(monkeypatch: pytest.MonkeyPatch, api: PredictionAPI) -> CollectorRegistry:
    registry = CollectorRegistry()
    info = api.model.info
    monkeypatch.setattr(
        api, "metrics", ServiceMetrics(info.name, info.version, info.run_id, registry=registry)
    )
    return registry


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    value = registry.get_sample_value(name, {"model_name": "housing-price", "model_version": "1", **labels})
    return 0.0 if value is None else value


async def test_metrics_count_v2_requests_and_rows_under_their_route(
    either: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = own_metrics(monkeypatch, either.api)
    await either.infer([tensor(either.rows)])
    await either.infer([tensor(either.rows)], path="/v2/models/housing-price/versions/1/infer")
    await either.http.post(INFER, content=b"{")
    await either.http.get("/v2/models/housing-price")
    await either.http.get("/v2/nowhere")
    requests: Callable[..., float] = lambda route, code: sample(  # noqa: E731
        registry, "tabula_http_requests_total", route=route, status_code=code
    )
    assert requests(INFER_ROUTE, "200") == 1
    assert requests(INFER_ROUTE, "400") == 1
    assert requests("/v2/models/{name}/versions/{version}/infer", "200") == 1
    assert requests("/v2/models/{name}", "200") == 1
    assert requests("unmatched", "404") == 1
    rows = len(either.rows)
    assert sample(registry, "tabula_predictions_total", route=INFER_ROUTE) == rows
    if either.contract.task == "classification":
        labels = labels_of(await either.infer([tensor(either.rows)]))
        for label in set(labels):
            counted = sample(registry, "tabula_predicted_class_total", route=INFER_ROUTE, **{"class": label})
            assert counted == 2 * labels.count(label)
    else:
        assert sample(registry, "tabula_prediction_value_count") == 2 * rows


async def test_prediction_log_and_drift_see_v2_rows(housing_dir: Path, logged: Lines) -> None:
    async for served in serve(
        housing_dir, HOUSING, house_rows(), log_predictions=True, input_log_sample_rate=1.0
    ):
        assert served.api.drift.psi() == {}
        await served.infer([tensor(served.rows)])
        [line] = [line for line in logged.lines if line.get("message") == "prediction"]
        assert line["endpoint"] == INFER_ROUTE
        assert line["rows"] == len(served.rows)
        assert np.allclose([list(row.values()) for row in line["inputs"]], served.rows)
        assert served.api.drift.psi()  # the rows reached the drift window through the batcher


async def test_an_unexpected_fault_is_a_protocol_500_at_once(
    housing: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = own_metrics(monkeypatch, housing.api)

    async def broken(rows: np.ndarray) -> np.ndarray:
        raise RuntimeError("boom")

    monkeypatch.setattr(housing.api.batcher, "predict", broken)
    content, headers = _binary_request(housing.rows)
    response = await housing.http.post(INFER, content=content, headers=headers)
    assert response.status_code == 500
    assert "unexpected error" in response.json()["error"]
    assert sample(registry, "tabula_http_requests_total", route=INFER_ROUTE, status_code="500") == 1


@pytest.mark.parametrize(
    "path", ["/v2", "/v2/health/live", "/v2/models/housing-price/versions/1/infer", "/v2/anything"]
)
def test_bentoml_forwards_every_v2_path_to_the_app(path: str) -> None:
    """BentoML mounts the app with its PassiveMount (_bentoml_impl/server/mount.py), which forwards only
    paths one of the app's own routes matches: without declared /v2 routes it answered 404 itself."""
    from _bentoml_impl.server.mount import PassiveMount
    from starlette.routing import Match

    mount = PassiveMount("/", build_app(HOUSING, lambda: None))
    scope = {"type": "http", "method": "GET", "path": path, "root_path": ""}
    assert mount.matches(scope)[0] == Match.FULL
    assert mount.matches({**scope, "path": "/v3/health/live"})[0] == Match.NONE


async def test_timeouts_and_oversized_bodies_answer_in_the_protocols_form(
    housing_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async for served in serve(housing_dir, HOUSING, house_rows(), request_timeout_seconds=0.05):

        async def slow(rows: np.ndarray) -> np.ndarray:
            await asyncio.sleep(1)
            return rows

        monkeypatch.setattr(served.api.batcher, "predict", slow)
        content, headers = _binary_request(served.rows)
        response = await served.http.post(INFER, content=content, headers=headers)
        assert (response.status_code, response.headers["retry-after"]) == (503, "1")
        assert response.json() == {"error": "request timed out, retry shortly"}
    async for served in serve(housing_dir, HOUSING, house_rows(), max_request_bytes=100):
        content, headers = _binary_request(served.rows)
        response = await served.http.post(INFER, content=content, headers=headers)
        assert response.status_code == 413
        assert "over 100 bytes" in response.json()["error"]


def test_integer_features_take_whole_numbers_only() -> None:
    """An integer feature's hard limit, as /predict's request model holds it (contracts/request.py)."""
    contract = ModelContract(
        example="counts",
        task="regression",
        target="y",
        features=[FeatureSpec(name="rooms", type="integer", minimum=1), FeatureSpec(name="area")],
    )
    reader = RowReader(contract, ["area", "rooms"], max_rows=10)

    def read(*rows: list[float]) -> np.ndarray:
        request = InferenceRequest.model_validate(
            {"inputs": [{"name": "input", "shape": [len(rows), 2], "datatype": "FP64", "data": list(rows)}]}
        )
        return reader.rows(request, BinaryData(memoryview(b""), declared=False))

    assert read([3.0, 50.5]).tolist() == [[50.5, 3.0]]  # into the model's column order
    with pytest.raises(InvalidTensorError, match=r"row 1, feature 'rooms': 2.5 is not a whole number"):
        read([3.0, 50.5], [2.5, 40.0])
    with pytest.raises(InvalidTensorError, match=r"feature 'rooms': 0.0 is not within the feature's bounds"):
        read([0.0, 50.5])


@pytest.mark.parametrize("algorithm", ["gzip", "deflate"])
async def test_compressed_requests_as_tritonclient_sends_them(housing: Served, algorithm: str) -> None:
    """tritonclient's request_compression_algorithm: gzip, or zlib data as HTTP's deflate
    (tritonclient/http/_client.py, infer)."""
    content, headers = _binary_request(housing.rows)
    packed = gzip.compress(content) if algorithm == "gzip" else zlib.compress(content)
    response = await housing.http.post(
        INFER, content=packed, headers={**headers, "Content-Encoding": algorithm}
    )
    assert response.status_code == 200, response.text
    assert response.json()["outputs"][0]["data"] == (await housing.predicted(housing.rows))["predictions"]


async def test_the_body_limit_holds_after_decompression(housing_dir: Path) -> None:
    async for served in serve(housing_dir, HOUSING, house_rows(), max_request_bytes=1000):
        body = json.dumps({"inputs": [{"name": "input", "shape": [1, 8], "datatype": "FP64", "data": ROW}]})
        packed = gzip.compress((body + " " * 2000).encode())
        assert len(packed) < 1000
        response = await served.http.post(INFER, content=packed, headers={"Content-Encoding": "gzip"})
        assert response.status_code == 413
        assert response.json() == {"error": "decompressed request body over 1000 bytes"}


# --- OpenAPI: the /v2 operations are documented, and what they answer matches the document -----------------


V2_OPERATIONS = {
    ("get", "/v2"),
    ("get", "/v2/health/live"),
    ("get", "/v2/health/ready"),
    *{
        (method, prefix + suffix)
        for prefix in ("/v2/models/{name}", "/v2/models/{name}/versions/{version}")
        for method, suffix in (("get", ""), ("get", "/ready"), ("post", "/infer"))
    },
}


def documented(spec: dict[str, Any]) -> set[tuple[str, str]]:
    return {
        (method, path) for path, item in spec["paths"].items() for method in item if path.startswith("/v2")
    }


def references(node: Any) -> list[str]:
    if isinstance(node, dict):
        return (
            [node["$ref"]]
            if "$ref" in node
            else [ref for value in node.values() for ref in references(value)]
        )
    if isinstance(node, list):
        return [ref for value in node for ref in references(value)]
    return []


async def test_openapi_documents_every_v2_operation_with_its_path_parameters(either: Served) -> None:
    spec = (await either.http.get("/openapi.json")).json()
    assert documented(spec) == V2_OPERATIONS
    for method, path in V2_OPERATIONS:
        operation = spec["paths"][path][method]
        declared = {parameter["name"] for parameter in operation.get("parameters", [])}
        assert declared == set(re.findall(r"{(\w+)}", path)), (method, path)
        assert "200" in operation["responses"]
    infer = spec["paths"]["/v2/models/{name}/infer"]["post"]
    request = infer["requestBody"]["content"]["application/json"]["schema"]
    assert request == {"$ref": "#/components/schemas/InferenceRequest"}
    assert {"400", "404", "413", "415", "503"} <= set(infer["responses"])
    schemas = spec["components"]["schemas"]
    for reference in references(spec["paths"]):
        assert reference.rsplit("/", 1)[-1] in schemas, reference


def conforms(spec: dict[str, Any], method: str, template: str, response: httpx.Response) -> None:
    """``response`` has a status the operation documents, and its JSON body matches that status's schema."""
    answers = spec["paths"][template][method]["responses"]
    assert str(response.status_code) in answers, (template, response.status_code, response.text)
    schema = answers[str(response.status_code)]["content"]["application/json"]["schema"]
    # The schema's references point into the whole document's components.
    jsonschema.validate(response.json(), {**schema, "components": spec["components"]})


async def test_every_v2_answer_matches_its_documented_schema(either: Served) -> None:
    spec = (await either.http.get("/openapi.json")).json()
    names = either.contract.feature_names
    tensor = {"name": "input", "shape": [2, len(names)], "datatype": "FP64", "data": either.rows[:2].tolist()}
    columns = [
        {"name": name, "shape": [2], "datatype": "FP64", "data": either.rows[:2, index].tolist()}
        for index, name in enumerate(names)
    ]
    requests: list[tuple[str, str, str, dict[str, Any] | None]] = [
        ("get", "/v2", "/v2", None),
        ("get", "/v2/health/live", "/v2/health/live", None),
        ("get", "/v2/health/ready", "/v2/health/ready", None),  # 503 until the golden set ran
        ("get", "/v2/models/{name}/ready", "/v2/models/housing-price/ready", None),
        ("get", "/v2/models/{name}", "/v2/models/housing-price", None),
        ("get", "/v2/models/{name}/versions/{version}", "/v2/models/housing-price/versions/1", None),
        ("get", "/v2/models/{name}", "/v2/models/other", None),
        (
            "get",
            "/v2/models/{name}/versions/{version}/ready",
            "/v2/models/housing-price/versions/9/ready",
            None,
        ),
        (
            "post",
            "/v2/models/{name}/infer",
            "/v2/models/housing-price/infer",
            {"id": "a", "inputs": [tensor]},
        ),
        (
            "post",
            "/v2/models/{name}/versions/{version}/infer",
            "/v2/models/housing-price/versions/1/infer",
            {"inputs": columns, "parameters": {"content_type": "pd"}},
        ),
        ("post", "/v2/models/{name}/infer", "/v2/models/other/infer", {"inputs": [tensor]}),
        (
            "post",
            "/v2/models/{name}/infer",
            "/v2/models/housing-price/infer",
            {"inputs": [{**tensor, "shape": [1]}]},
        ),
        ("post", "/v2/models/{name}/infer", "/v2/models/housing-price/infer", {"inputs": []}),
    ]
    statuses = set()
    for method, template, path, body in requests:
        response = await either.http.request(method.upper(), path, json=body)
        conforms(spec, method, template, response)
        statuses.add(response.status_code)
    assert either.api.golden_set_reproduces()
    for path in ("/v2/health/ready", "/v2/models/housing-price/ready"):
        ready = await either.http.get(path)
        assert ready.status_code == 200
        conforms(spec, "get", path.replace("housing-price", "{name}"), ready)
    assert statuses == {200, 400, 404, 503}
