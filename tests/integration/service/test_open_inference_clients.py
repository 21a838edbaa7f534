"""The real Open Inference Protocol clients from PyPI against the service, over loopback HTTP.

``tritonclient[http]`` (a dev dependency) runs in the test process; KServe's ``InferenceRESTClient``
runs in its own virtual environment (``kserve`` pins conflict with the project's), made once with uv
under ``~/.cache/tabula-bench/peers`` and driven through ``kserve_client.py``. Each client reads
health and metadata, gets the numbers ``/predict/batch`` gives for the same rows, and sees the 4xx
of bad tensors. The housing model is the session's real ``bentoml serve`` (``served``); the Iris
classifier's app is served by uvicorn in a thread, built as the service builds it
(``service.app.build_app`` around its prediction API), which keeps the module to seconds.
"""

from __future__ import annotations

import json
import logging
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
import uvicorn
from sklearn.ensemble import HistGradientBoostingClassifier
from tritonclient.utils import InferenceServerException

from bench.targets import virtual_environment
from service.api import PredictionAPI
from service.app import build_app
from service.config import ServiceSettings
from service.model import load_model_dir
from tests.integration.service.conftest import RegisteredModel, requests_counted
from tests.support import Server, free_port
from tests.unit.service.conftest import INFO, IRIS, iris_frame, iris_model_dir

pytestmark = pytest.mark.integration

KSERVE_PINS = ("kserve==0.21.0",)
KSERVE_SCRIPT = Path(__file__).with_name("kserve_client.py")


@dataclass(frozen=True)
class Target:
    """A served model: where, under which name and version, with its features and rows to predict."""

    base_url: str
    model: str
    version: str
    features: list[str]
    rows: np.ndarray
    task: str

    @property
    def host(self) -> str:
        return self.base_url.removeprefix("http://")

    def predicted(self) -> dict[str, Any]:
        body = {"rows": [dict(zip(self.features, row, strict=True)) for row in self.rows.tolist()]}
        response = httpx.post(f"{self.base_url}/predict/batch", json=body, timeout=30)
        assert response.status_code == 200, response.text
        answer: dict[str, Any] = response.json()
        return answer


@pytest.fixture(scope="module")
def housing(served: Server, registered_model: RegisteredModel) -> Target:
    rows = registered_model.test_rows.iloc[:6]
    return Target(
        served.base_url, registered_model.name, registered_model.version, list(rows.columns), rows.to_numpy(),
        "regression",
    )  # fmt: skip


@pytest.fixture(scope="module")
def iris(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    """The Iris classifier's app under uvicorn on a loopback port, golden set reproduced."""
    estimator = HistGradientBoostingClassifier(max_iter=10, max_leaf_nodes=7, random_state=0)
    model = load_model_dir(iris_model_dir(tmp_path_factory.mktemp("iris"), estimator), INFO)
    api = PredictionAPI(model, ServiceSettings(log_predictions=False), logging.getLogger("tabula.service"))
    assert api.golden_set_reproduces()
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(build_app(IRIS, lambda: api), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive(), "uvicorn exited"
        assert time.monotonic() < deadline, "uvicorn did not start in 30 s"
        time.sleep(0.05)
    frame, _ = iris_frame()
    try:
        yield Target(
            f"http://127.0.0.1:{port}", INFO.name, INFO.version, IRIS.feature_names,
            frame.iloc[::25].to_numpy(), "classification",
        )  # fmt: skip
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        api.close()


@pytest.fixture(params=["housing", "iris"])
def target(request: pytest.FixtureRequest) -> Target:
    found: Target = request.getfixturevalue(request.param)
    return found


def assert_same_numbers(target: Target, outputs: dict[str, list[Any]], expected: dict[str, Any]) -> None:
    """Outputs as lists (labels as text) equal /predict/batch's answer, exactly."""
    assert outputs["prediction"] == expected["predictions"]
    if target.task == "classification":
        labels = IRIS.class_labels
        assert outputs["probabilities"] == [
            [row[label] for label in labels] for row in expected["probabilities"]
        ]


# --- tritonclient ------------------------------------------------------------------------------------------


def triton_outputs(result: triton.InferResult, target: Target) -> dict[str, list[Any]]:
    names = ["prediction", "probabilities"] if target.task == "classification" else ["prediction"]
    read: dict[str, list[Any]] = {}
    for name in names:
        values = result.as_numpy(name)
        assert values is not None, name
        read[name] = [v.decode() if isinstance(v, bytes) else v for v in values.tolist()]
    return read


def triton_input(rows: np.ndarray, binary: bool, datatype: str = "FP64") -> triton.InferInput:
    infer_input = triton.InferInput("input", list(rows.shape), datatype)
    infer_input.set_data_from_numpy(rows, binary_data=binary)
    return infer_input


def test_tritonclient_health_and_metadata(target: Target) -> None:
    client = triton.InferenceServerClient(url=target.host)
    try:
        assert client.is_server_live()
        assert client.is_server_ready()
        assert client.is_model_ready(target.model)
        assert client.is_model_ready(target.model, target.version)
        assert not client.is_model_ready("no-such-model")
        assert client.get_server_metadata()["extensions"] == ["binary_tensor_data"]
        metadata = client.get_model_metadata(target.model, target.version)
        assert metadata["versions"] == [target.version]
        assert metadata["inputs"] == [
            {"name": "input", "datatype": "FP64", "shape": [-1, len(target.features)]}
        ]
        assert [f["name"] for f in metadata["features"]] == target.features
        with pytest.raises(InferenceServerException) as unknown:
            client.get_model_metadata(target.model, "999")
        assert unknown.value.status() == "404"
    finally:
        client.close()


@pytest.mark.parametrize("binary", [True, False], ids=["binary-default", "binary_data-False"])
def test_tritonclient_gets_the_numbers_predict_gives(target: Target, binary: bool) -> None:
    expected = target.predicted()
    client = triton.InferenceServerClient(url=target.host)
    try:
        inputs = [triton_input(target.rows, binary)]
        if binary:
            # tritonclient's defaults: binary input, no outputs named (so binary_data_output is set).
            result = client.infer(target.model, inputs, request_id="t-1")
        else:
            names = ["prediction", "probabilities"] if target.task == "classification" else ["prediction"]
            outputs = [triton.InferRequestedOutput(name, binary_data=False) for name in names]
            result = client.infer(target.model, inputs, model_version=target.version, outputs=outputs)
        assert_same_numbers(target, triton_outputs(result, target), expected)
        if binary:
            assert result.get_response()["id"] == "t-1"
            compressed = client.infer(target.model, inputs, request_compression_algorithm="gzip")
            assert_same_numbers(target, triton_outputs(compressed, target), expected)
        columns = []
        for index, name in enumerate(target.features):
            column = triton.InferInput(name, [len(target.rows)], "FP64")
            column.set_data_from_numpy(target.rows[:, index].copy(), binary_data=binary)
            columns.append(column)
        by_column = client.infer(target.model, columns, parameters={"content_type": "pd"})
        assert_same_numbers(target, triton_outputs(by_column, target), expected)
    finally:
        client.close()


WORDS = {"shape": "has shape", "datatype": "datatype BYTES", "nan": "is not a finite number"}


def test_tritonclient_sees_400_for_bad_tensors(target: Target) -> None:
    nan_rows = target.rows.copy()
    nan_rows[0, 1] = np.nan
    bad = {
        "shape": triton_input(target.rows[:, :-1].copy(), binary=True),
        "datatype": triton_input(
            np.full(target.rows.shape, "1", dtype=object), binary=True, datatype="BYTES"
        ),
        "nan": triton_input(nan_rows, binary=True),
    }
    client = triton.InferenceServerClient(url=target.host)
    try:
        for case, infer_input in bad.items():
            with pytest.raises(InferenceServerException) as refused:
                client.infer(target.model, [infer_input])
            assert refused.value.status() == "400", case
            assert WORDS[case] in str(refused.value.message()), case
    finally:
        client.close()


# --- KServe's InferenceRESTClient ---------------------------------------------------------------------------


@pytest.fixture(scope="session")
def kserve_python() -> Path:
    """The interpreter of the KServe client's own environment (bench/targets.py), made once with uv."""
    return virtual_environment("kserve-client", KSERVE_PINS)


def test_kserve_client(target: Target, kserve_python: Path) -> None:
    request = {"features": target.features, "rows": target.rows.tolist()}
    ran = subprocess.run(
        [str(kserve_python), str(KSERVE_SCRIPT), target.base_url, target.model, json.dumps(request)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert ran.returncode == 0, ran.stderr[-3000:]
    result = json.loads(ran.stdout)
    assert (result["live"], result["ready"], result["model_ready"]) == (True, True, True)
    assert result["server"]["extensions"] == ["binary_tensor_data"]
    assert result["metadata"]["name"] == target.model
    assert result["metadata"]["versions"] == [target.version]
    assert result["metadata"]["inputs"] == [
        {"name": "input", "datatype": "FP64", "shape": [-1, len(target.features)]}
    ]
    expected = target.predicted()
    for form in ("json", "binary"):
        assert result[form]["id"] == "kserve-1"
        assert_same_numbers(target, result[form]["outputs"], expected)
    assert_same_numbers(target, result["columns"], expected)
    errors = result["errors"]
    assert {case: status for case, (status, _) in errors.items()} == dict.fromkeys(errors, 400)
    assert "has shape" in errors["shape"][1]
    assert "datatype INT8" in errors["datatype"][1]
    assert "NaN as null" in errors["nan_json"][1]
    assert "is not a finite number" in errors["nan_binary"][1]


def test_a_real_server_counts_v2_requests_under_their_route(housing: Target) -> None:
    """Under `bentoml serve` (multiprocess metrics), as the chart's SLO queries read them."""
    route = "/v2/models/{name}/infer"
    before = requests_counted(housing.base_url)
    client = triton.InferenceServerClient(url=housing.host)
    try:
        client.infer(housing.model, [triton_input(housing.rows, binary=True)])
        with pytest.raises(InferenceServerException):
            client.infer(housing.model, [triton_input(housing.rows[:, :-1].copy(), binary=True)])
    finally:
        client.close()
    after = requests_counted(housing.base_url)
    assert after[route, "200"] - before[route, "200"] == 1
    assert after[route, "400"] - before[route, "400"] == 1
