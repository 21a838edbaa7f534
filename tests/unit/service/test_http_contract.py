"""The HTTP contract for both tasks, in-process (httpx ASGITransport) with an injected prediction API.

Each task's app is built from its model's contract, as the service builds it at start-up: the
housing regressor and an Iris classifier. OpenAPI names the contract's fields and bounds, the
contract's limits are enforced with the structured 4xx body (docs/architecture.md), a regressor
answers a number and a classifier its label with the class probabilities, and the metrics count
what was answered.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from contracts.artifacts import GOLDEN_SET_FILE, GoldenSet
from contracts.model import ModelContract
from service.api import PredictionAPI
from service.app import build_app
from service.config import ServiceSettings
from service.model import LoadedModel, load_model_dir
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

HOUSE = dict.fromkeys(FEATURES, 5.0) | {"Latitude": 35.0, "Longitude": -120.0}
FLOWER = {"sepal_length": 5.8, "sepal_width": 3.0, "petal_length": 4.35, "petal_width": 1.3}
COMMON = {"prediction_id", "model_name", "model_version", "timestamp", "warnings"}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@dataclass
class Served:
    contract: ModelContract
    model: LoadedModel
    api: PredictionAPI
    http: httpx.AsyncClient
    row: dict[str, float]


async def serve(path: Path, contract: ModelContract, row: dict[str, float]) -> AsyncIterator[Served]:
    model = load_model_dir(path, INFO)
    api = PredictionAPI(model, ServiceSettings(log_predictions=False), logging.getLogger("tabula.service"))
    transport = httpx.ASGITransport(app=build_app(contract, lambda: api))
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://service") as http:
            yield Served(contract, model, api, http, row)
    finally:
        api.close()


@pytest.fixture(scope="module")
def housing_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return model_dir(tmp_path_factory.mktemp("tabula"), hand_made_stats(), FEATURES)


@pytest.fixture(scope="module")
def iris_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    classifier = make_pipeline(StandardScaler(), HistGradientBoostingClassifier(max_iter=15, random_state=0))
    return iris_model_dir(tmp_path_factory.mktemp("iris"), classifier)


@pytest.fixture
async def housing(housing_dir: Path) -> AsyncIterator[Served]:
    async for served in serve(housing_dir, HOUSING, HOUSE):
        yield served


@pytest.fixture
async def iris(iris_dir: Path) -> AsyncIterator[Served]:
    async for served in serve(iris_dir, IRIS, FLOWER):
        yield served


@pytest.fixture(params=["housing", "iris"])
def served(request: pytest.FixtureRequest) -> Served:
    served: Served = request.getfixturevalue(request.param)
    return served


def samples(metric: Any) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in metric.collect()
        for sample in family.samples
    }


def total(metric: Any, name: str, **labels: str) -> float:
    wanted = set(labels.items())
    return sum(value for (n, ls), value in samples(metric).items() if n == name and wanted <= ls)


def assert_error(response: httpx.Response, field: str | None, constraint: str) -> None:
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/json"
    assert set(response.json()) == {"error"}
    error = response.json()["error"]
    assert error["type"] == "validation_error"
    assert error["message"]
    assert [(d["field"], d["constraint"]) for d in error["details"]] == [(field, constraint)], error


async def test_openapi_shows_the_contracts_fields_and_bounds(served: Served) -> None:
    spec = (await served.http.get("/openapi.json")).json()
    assert served.contract.example in spec["info"]["title"]
    paths = spec["paths"]
    one = paths["/predict"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    batch = paths["/predict/batch"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    for schema in (one, batch["properties"]["rows"]["items"]):
        assert list(schema["properties"]) == served.contract.feature_names
        assert schema["required"] == served.contract.feature_names
        assert schema["additionalProperties"] is False
        for feature in served.contract.features:
            field = schema["properties"][feature.name]
            assert (field.get("minimum"), field.get("maximum")) == (feature.minimum, feature.maximum)
    text = str(spec)
    other = IRIS if served.contract is HOUSING else HOUSING
    assert not any(name in text for name in other.feature_names), "the other example's fields leak in"


async def test_openapi_shows_each_tasks_answer(served: Served) -> None:
    spec = (await served.http.get("/openapi.json")).json()
    answers = {
        path: spec["paths"][path]["post"]["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
        for path in ("/predict", "/predict/batch")
    }
    schemas = spec["components"]["schemas"]
    one = schemas[answers["/predict"].rsplit("/", 1)[-1]]["properties"]
    many = schemas[answers["/predict/batch"].rsplit("/", 1)[-1]]["properties"]
    if served.contract.task == "regression":
        assert next(iter(one)) == "prediction"
        assert set(one) == {"prediction", *COMMON}
        assert one["prediction"]["type"] == "number"
        assert many["predictions"]["items"]["type"] == "number"
        assert "probabilities" not in one
        assert "probabilities" not in many
    else:
        assert one["prediction"]["enum"] == IRIS_LABELS
        assert one["probabilities"]["propertyNames"]["enum"] == IRIS_LABELS
        assert many["predictions"]["items"]["enum"] == IRIS_LABELS
        assert many["probabilities"]["items"]["propertyNames"]["enum"] == IRIS_LABELS


async def test_a_regressor_answers_a_number(housing: Served) -> None:
    body = (await housing.http.post("/predict", json=HOUSE)).json()
    assert set(body) == {"prediction", *COMMON}
    rows = np.array([[HOUSE[name] for name in housing.model.feature_names]])
    assert body["prediction"] == float(housing.model.estimator.predict(rows)[0])
    batch = (await housing.http.post("/predict/batch", json={"rows": [HOUSE] * 3})).json()
    assert set(batch) == {"predictions", "count", "model_name", "model_version", "warnings"}
    assert batch["predictions"] == [body["prediction"]] * 3
    assert batch["count"] == 3


async def test_a_classifier_answers_its_label_and_the_class_probabilities(iris: Served) -> None:
    frame, labels = iris_frame()
    flowers = frame.iloc[[0, 60, 120, 140]].to_dict(orient="records")
    expected = iris.model.estimator.predict_proba(frame.iloc[[0, 60, 120, 140]])  # type: ignore[attr-defined]
    for flower, probabilities in zip(flowers, expected, strict=True):
        body = (await iris.http.post("/predict", json=flower)).json()
        assert set(body) == {"prediction", "probabilities", *COMMON}
        assert list(body["probabilities"]) == IRIS_LABELS
        # Exactly scikit-learn's probabilities (the compiled path answers small requests).
        assert list(body["probabilities"].values()) == probabilities.tolist()
        assert body["prediction"] == IRIS_LABELS[int(np.argmax(probabilities))]
    assert iris.model.predictor == "compiled-trees"
    batch = (await iris.http.post("/predict/batch", json={"rows": flowers})).json()
    assert set(batch) == {"predictions", "probabilities", "count", "model_name", "model_version", "warnings"}
    assert batch["count"] == len(batch["predictions"]) == len(batch["probabilities"]) == 4
    assert batch["predictions"] == [IRIS_LABELS[int(i)] for i in np.argmax(expected, axis=1)]
    assert batch["predictions"] == labels.iloc[[0, 60, 120, 140]].tolist()
    assert [list(p.values()) for p in batch["probabilities"]] == expected.tolist()


@pytest.mark.parametrize(
    ("change", "field", "constraint"),
    [
        ({"petal_length": -0.5}, "petal_length", "greater_than_equal"),
        ({"sepal_width": 50.5}, "sepal_width", "less_than_equal"),
        ({"petal_width": "wide"}, "petal_width", "float_type"),
        ({"sepal_length": None}, "sepal_length", "float_type"),
        ({"MedInc": 3.0}, "MedInc", "extra_forbidden"),
    ],
)
async def test_the_contracts_limits_are_enforced_with_the_structured_body(
    iris: Served, change: dict[str, Any], field: str, constraint: str
) -> None:
    assert_error(await iris.http.post("/predict", json=FLOWER | change), field, constraint)
    rows = {"rows": [FLOWER, FLOWER | change]}
    assert_error(await iris.http.post("/predict/batch", json=rows), f"rows.1.{field}", constraint)


async def test_a_missing_feature_and_non_finite_values_are_refused(served: Served) -> None:
    name = served.contract.feature_names[0]
    missing = {key: value for key, value in served.row.items() if key != name}
    assert_error(await served.http.post("/predict", json=missing), name, "missing")
    body = json.dumps(served.row | {name: 12345.0}).replace("12345.0", "NaN")
    response = await served.http.post("/predict", content=body, headers={"content-type": "application/json"})
    assert_error(response, name, "finite_number")


async def test_metrics_count_rows_per_class_and_observe_the_confidence(iris: Served) -> None:
    frame, _ = iris_frame()
    flowers = frame.iloc[::10].to_dict(orient="records")
    answered: Counter[str] = Counter()
    confidences = []
    for flower in flowers[:3]:
        body = (await iris.http.post("/predict", json=flower)).json()
        answered[body["prediction"]] += 1
        confidences.append(max(body["probabilities"].values()))
    batch = (await iris.http.post("/predict/batch", json={"rows": flowers})).json()
    metrics = iris.api.metrics
    for label in IRIS_LABELS:
        name = "tabula_predicted_class_total"
        assert total(metrics.predicted_class, name, route="/predict", **{"class": label}) == answered[label]
        in_batch = batch["predictions"].count(label)
        assert total(metrics.predicted_class, name, route="/predict/batch", **{"class": label}) == in_batch
    rows = 3 + len(flowers)
    assert total(metrics.predictions, "tabula_predictions_total") == rows
    assert total(metrics.prediction_confidence, "tabula_prediction_confidence_count") == rows
    confidences += [max(p.values()) for p in batch["probabilities"]]
    observed = total(metrics.prediction_confidence, "tabula_prediction_confidence_sum")
    assert observed == pytest.approx(sum(confidences))
    assert total(metrics.prediction_value, "tabula_prediction_value_count") == 0


async def test_metrics_of_a_regressor_are_unchanged(housing: Served) -> None:
    await housing.http.post("/predict/batch", json={"rows": [HOUSE] * 4})
    metrics = housing.api.metrics
    assert total(metrics.prediction_value, "tabula_prediction_value_count") == 4
    assert total(metrics.predictions, "tabula_predictions_total", route="/predict/batch") == 4
    assert samples(metrics.predicted_class) == {}


async def test_soft_limits_warn_from_the_training_range(iris: Served) -> None:
    # Within the hard limit (50 cm), far beyond any training flower.
    body = (await iris.http.post("/predict", json=FLOWER | {"petal_length": 30.0})).json()
    assert [(w["feature"], w["value"], w["row"]) for w in body["warnings"]] == [("petal_length", 30.0, None)]
    assert body["warnings"][0]["high"] < 30.0
    feature = "petal_length"
    assert total(iris.api.metrics.out_of_range, "tabula_input_out_of_range_total", feature=feature) == 1


async def test_the_model_card_names_the_task_and_labels(served: Served) -> None:
    card = (await served.http.get("/model")).json()
    assert card["task"] == served.contract.task
    assert card["target"] == served.contract.target
    assert card["class_labels"] == served.contract.class_labels
    assert [item["name"] for item in card["feature_stats"]] == served.model.feature_names


async def test_a_classifiers_golden_set_needs_exact_labels_and_close_probabilities(
    iris: Served, iris_dir: Path
) -> None:
    assert iris.api.golden_set_reproduces()
    golden = iris.model.golden
    flipped = [golden.labels[-1], *golden.labels[1:-1], golden.labels[0]]
    assert flipped != golden.labels
    iris.model.golden = golden.model_copy(update={"labels": flipped})
    assert not iris.api.golden_set_reproduces()
    nudged = [[p + 2e-9 for p in row] for row in golden.probabilities]
    iris.model.golden = golden.model_copy(update={"probabilities": nudged})
    assert not iris.api.golden_set_reproduces()
    iris.model.golden = GoldenSet.read(iris_dir / GOLDEN_SET_FILE)
    assert iris.api.golden_set_reproduces()


async def test_drift_and_the_prediction_log_follow_the_contract(iris_dir: Path, logged: Lines) -> None:
    model = load_model_dir(iris_dir, INFO)
    settings = ServiceSettings(drift_update_seconds=0, input_log_sample_rate=1.0)
    api = PredictionAPI(model, settings, logging.getLogger("tabula.service"))
    transport = httpx.ASGITransport(app=build_app(IRIS, lambda: api))
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://service") as http:
            answer = (await http.post("/predict/batch", json={"rows": [FLOWER, FLOWER]})).json()
    finally:
        api.close()
    psi = {dict(labels)["feature"] for (_, labels) in samples(api.metrics.drift_psi)}
    assert psi == set(IRIS.feature_names)
    [line] = [line for line in logged.lines if line["message"] == "prediction"]
    assert line["inputs"] == [FLOWER, FLOWER]
    assert line["outputs"] == answer["predictions"]
    assert line["probabilities"] == answer["probabilities"]
