"""The load test's check of an answer, per task: a 200 without the task's predictions is a failure."""

from typing import Any

import pytest

from load.answers import ANSWERS

pytestmark = pytest.mark.unit

REGRESSION, CLASSIFICATION = ANSWERS["regression"], ANSWERS["classification"]
PROBABILITIES = {"setosa": 0.9, "versicolor": 0.06, "virginica": 0.04}


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ({"prediction": 1.5}, None),
        ({"prediction": 2}, None),
        ({"prediction": True}, "response body lacks a numeric 'prediction'"),
        (
            {"prediction": "setosa", "probabilities": PROBABILITIES},
            "response body lacks a numeric 'prediction'",
        ),
        ({}, "response body lacks a numeric 'prediction'"),
    ],
)
def test_regression_single(body: dict[str, Any], problem: str | None) -> None:
    assert REGRESSION.single(body) == problem


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ({"predictions": [1.5, 2.0]}, None),
        ({"predictions": [1.5]}, "response body lacks 'predictions' for 2 rows"),
        ({"predictions": [1.5, "x"]}, "response 'predictions' are not all numbers"),
    ],
)
def test_regression_batch(body: dict[str, Any], problem: str | None) -> None:
    assert REGRESSION.batch(body, 2) == problem


LACKS_CLASS = "response body lacks a class 'prediction' among its 'probabilities'"


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ({"prediction": "setosa", "probabilities": PROBABILITIES}, None),
        ({"prediction": "setosa"}, LACKS_CLASS),
        ({"prediction": "rose", "probabilities": PROBABILITIES}, LACKS_CLASS),
        ({"prediction": 1.5, "probabilities": PROBABILITIES}, LACKS_CLASS),
        ({"prediction": "setosa", "probabilities": {"setosa": "high"}}, LACKS_CLASS),
        ({"prediction": "setosa", "probabilities": [0.9, 0.1]}, LACKS_CLASS),
    ],
)
def test_classification_single(body: dict[str, Any], problem: str | None) -> None:
    assert CLASSIFICATION.single(body) == problem


LACKS_ROWS = "response body lacks 'predictions' and 'probabilities' for 2 rows"
NOT_LABELS = "response 'predictions' are not all class labels among their 'probabilities'"


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ({"predictions": ["setosa", "virginica"], "probabilities": [PROBABILITIES, PROBABILITIES]}, None),
        ({"predictions": ["setosa", "virginica"]}, LACKS_ROWS),
        ({"predictions": ["setosa"], "probabilities": [PROBABILITIES]}, LACKS_ROWS),
        ({"predictions": ["setosa", "virginica"], "probabilities": [PROBABILITIES]}, LACKS_ROWS),
        ({"predictions": ["setosa", "rose"], "probabilities": [PROBABILITIES, PROBABILITIES]}, NOT_LABELS),
        ({"predictions": [1.0, 2.0], "probabilities": [PROBABILITIES, PROBABILITIES]}, NOT_LABELS),
    ],
)
def test_classification_batch(body: dict[str, Any], problem: str | None) -> None:
    assert CLASSIFICATION.batch(body, 2) == problem
