"""Smoke test of a classifier under a real `bentoml serve`: the Iris example, trained, built and served.

The model is trained by `tabula train --example iris` (one small HistGradientBoosting candidate),
packaged by `tabula build` and served from its Bento; the in-process suite
(tests/unit/service/test_http_contract.py) covers the HTTP contract in detail.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from contracts.artifacts import GOLDEN_SET_FILE, GoldenSet
from tests.integration.service.conftest import IrisModel, run_cli
from tests.support import Server, server_home, service_env, start_server, stop_server, wait_ready

pytestmark = pytest.mark.integration

LABELS = ["setosa", "versicolor", "virginica"]
FLOWER = {"sepal_length": 6.7, "sepal_width": 3.0, "petal_length": 5.2, "petal_width": 2.3}


@pytest.fixture(scope="module")
def iris_bento(iris_registered_model: IrisModel, bentoml_home: Path) -> str:
    env = {**service_env(bentoml_home), "MLFLOW_TRACKING_URI": iris_registered_model.tracking_uri}
    result = run_cli(["build", "--model-name", iris_registered_model.name], env)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def iris_server(
    iris_bento: str, bentoml_home: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    log_path = tmp_path_factory.mktemp("iris-logs") / "served.log"
    server = start_server([iris_bento], service_env(server_home(bentoml_home, log_path)), log_path)
    try:
        wait_ready(server)
        yield server
    finally:
        stop_server(server)


@pytest.fixture(scope="module")
def golden(bentoml_home: Path, iris_bento: str, iris_registered_model: IrisModel) -> GoldenSet:
    pattern = f"{iris_registered_model.name}/v{iris_registered_model.version}-*/{GOLDEN_SET_FILE}"
    [path] = (bentoml_home / "models").glob(pattern)
    return GoldenSet.read(path)


def test_the_iris_bento_serves_labels_probabilities_and_class_metrics(
    iris_server: Server, golden: GoldenSet, iris_registered_model: IrisModel
) -> None:
    with httpx.Client(base_url=iris_server.base_url, timeout=30) as http:
        card = http.get("/model").json()
        assert (card["task"], card["class_labels"], card["predictor"]) == (
            "classification", LABELS, "compiled-trees"
        )  # fmt: skip
        spec = http.get("/openapi.json").json()
        body = spec["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]["schema"]
        assert list(body["properties"]) == list(FLOWER)
        assert "MedInc" not in str(spec)

        answer = http.post("/predict", json=FLOWER)
        assert answer.status_code == 200, answer.text
        one = answer.json()
        assert one["prediction"] == "virginica"
        assert list(one["probabilities"]) == LABELS
        assert sum(one["probabilities"].values()) == pytest.approx(1.0)
        assert one["model_name"] == iris_registered_model.name

        rows = [dict(zip(golden.feature_names, row, strict=True)) for row in golden.rows]
        batch = http.post("/predict/batch", json={"rows": rows}).json()
        assert batch["count"] == len(rows)
        assert batch["predictions"] == golden.labels
        for served, expected in zip(batch["probabilities"], golden.probabilities, strict=True):
            assert list(served.values()) == pytest.approx(expected, abs=golden.tolerance)

        refused = http.post("/predict", json=FLOWER | {"petal_width": -1})
        assert refused.status_code == 422
        [detail] = refused.json()["error"]["details"]
        assert (detail["field"], detail["constraint"]) == ("petal_width", "greater_than_equal")

        counted: dict[tuple[str, str], float] = {}
        for family in text_string_to_metric_families(http.get("/metrics").text):
            for sample in family.samples:
                if sample.name == "tabula_predicted_class_total":
                    counted[sample.labels["route"], sample.labels["class"]] = sample.value
                if sample.name == "tabula_prediction_confidence_count":
                    counted["confidence", "count"] = sample.value
    assert counted["/predict", "virginica"] == 1
    for label in LABELS:
        assert counted.get(("/predict/batch", label), 0) == golden.labels.count(label)
    assert counted["confidence", "count"] == 1 + len(rows)
