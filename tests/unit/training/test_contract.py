"""The model contract: derived from the example and the training rows, validated, and turned into a
request model with the hard limits."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from pydantic import ValidationError

from contracts.data import Split, load_dataset, split_dataset
from contracts.errors import DataError
from contracts.examples import load_example
from contracts.model import FeatureSpec, ModelContract
from contracts.request import request_model
from training.contract import derive_contract

pytestmark = pytest.mark.unit


def iris_split() -> Split:
    example = load_example("iris")
    dataset = load_dataset(None, example.spec.feature_names, "species", example)
    return split_dataset(dataset, test_size=0.2, test_seed=42, validation_size=0.2, seed=42, stratify=True)


def test_iris_contract_has_the_declared_limits_and_the_sorted_labels(tmp_path: Path) -> None:
    example = load_example("iris")
    contract = derive_contract(example, example.spec.feature_names, "species", iris_split())
    assert contract.task == "classification"
    assert contract.example == "iris"
    assert contract.class_labels == ["setosa", "versicolor", "virginica"]
    assert contract.feature_names == ["sepal_length", "sepal_width", "petal_length", "petal_width"]
    assert {(spec.minimum, spec.maximum) for spec in contract.features} == {(0, 50)}
    assert ModelContract.read(contract.write(tmp_path / "contract.json")) == contract


def test_housing_contract_is_a_regression_without_labels(small_data: Path) -> None:
    example = load_example("housing")
    dataset = load_dataset(small_data, example.spec.feature_names, "MedHouseVal", example)
    split = split_dataset(dataset, test_size=0.2, test_seed=42, validation_size=0.1, seed=42)
    contract = derive_contract(example, ["Latitude", "MedInc"], "MedHouseVal", split)
    assert contract.task == "regression"
    assert contract.class_labels == []
    # The settings' order is the model's order; the example's limits follow each feature.
    assert contract.feature_names == ["Latitude", "MedInc"]
    assert (contract.features[0].minimum, contract.features[0].maximum) == (32.0, 42.5)


def test_a_feature_the_example_does_not_declare_is_an_unbounded_float() -> None:
    example = load_example("iris")
    split = iris_split()
    split = Split(
        split.x_train.assign(extra=1.0), split.y_train, split.x_val, split.y_val, split.x_test, split.y_test
    )
    contract = derive_contract(example, ["extra", "petal_width"], "species", split)
    assert contract.features[0] == FeatureSpec(name="extra")


def test_a_test_label_never_seen_in_training_is_an_error() -> None:
    example = load_example("iris")
    split = iris_split()
    test = split.y_test.copy()
    test.iloc[0] = "unseen"
    broken = Split(split.x_train, split.y_train, split.x_val, split.y_val, split.x_test, test)
    with pytest.raises(DataError, match=r"labels \['unseen'\] appear in validation/test rows"):
        derive_contract(example, example.spec.feature_names, "species", broken)


FEATURES = [FeatureSpec(name="a", minimum=0, maximum=10), FeatureSpec(name="n", type="integer")]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"task": "classification", "class_labels": ["only"]}, "at least two distinct class labels"),
        ({"task": "classification", "class_labels": ["x", "x"]}, "at least two distinct class labels"),
        ({"task": "regression", "class_labels": ["x", "y"]}, "no class labels"),
        ({"task": "regression", "features": [FeatureSpec(name="a"), FeatureSpec(name="a")]}, "repeat"),
        ({"task": "regression", "features": []}, "at least 1 item"),
    ],
)
def test_inconsistent_contracts_are_refused(fields: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        ModelContract.model_validate({"example": "t", "target": "y", "features": FEATURES} | fields)


def test_non_finite_bounds_are_refused() -> None:
    with pytest.raises(ValidationError, match="finite"):
        FeatureSpec(name="a", maximum=math.inf)


@pytest.fixture
def request_row() -> type:
    contract = ModelContract(example="my-flowers", task="regression", features=FEATURES, target="y")
    return request_model(contract)


def test_request_model_accepts_a_row_inside_the_limits(request_row: type) -> None:
    assert request_row.__name__ == "MyFlowersFeatures"
    row = request_row.model_validate({"a": 2.5, "n": 3})
    assert (row.a, row.n) == (2.5, 3)
    # A JSON integer is a valid float.
    assert request_row.model_validate_json('{"a": 2, "n": 3}').a == 2
    schema = request_row.model_json_schema()
    assert schema["required"] == ["a", "n"]
    assert schema["properties"]["a"]["maximum"] == 10


@pytest.mark.parametrize(
    ("row", "where"),
    [
        ({"a": 11.0, "n": 1}, "a"),
        ({"a": -0.1, "n": 1}, "a"),
        ({"a": float("nan"), "n": 1}, "a"),
        ({"a": 1.0, "n": 1.5}, "n"),
        ({"a": "1.0", "n": 1}, "a"),
        ({"a": 1.0}, "n"),
        ({"a": 1.0, "n": 1, "b": 2}, "b"),
    ],
    ids=["above", "below", "nan", "fraction", "text", "missing", "extra"],
)
def test_request_model_refuses_rows_breaking_the_hard_limits(
    request_row: type, row: dict[str, object], where: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        request_row.model_validate(row)
    assert caught.value.errors()[0]["loc"] == (where,)


def test_request_model_of_the_tabula_example_keeps_californias_box() -> None:
    example = load_example("housing")
    contract = ModelContract(example="housing", task="regression", features=example.spec.features, target="t")
    row = dict.fromkeys(example.spec.feature_names, 1.0) | {"Latitude": 37.5, "Longitude": -122.0}
    model = request_model(contract)
    model.model_validate(row)
    with pytest.raises(ValidationError, match="Latitude"):
        model.model_validate(row | {"Latitude": 45.0})


def test_the_light_contracts_modules_stay_light() -> None:
    """The contracts modules the service image and the Locust process import load none of the project's
    other packages, nor numpy/pandas (lint-imports checks the layers of every module; this, what they
    pull in at run time). contracts.data, which training and the load test's rebuild use, may."""
    import subprocess
    import sys

    from tests.support import REPO_ROOT

    probe = (
        "import sys, contracts.artifacts, contracts.errors, contracts.examples, contracts.model\n"
        "import contracts.modelio, contracts.params, contracts.request, contracts.settings\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & "
        "{'training', 'service', 'load', 'bench', 'release', 'cli', 'examples', 'numpy', 'pandas'}))"
    )
    completed = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO_ROOT, capture_output=True, text=True, check=True, timeout=60
    )
    assert completed.stdout.strip() == "[]"
