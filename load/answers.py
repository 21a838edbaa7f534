"""What a successful answer of the service looks like, per task: the load test's check of each response.

A 200 whose body lacks its predictions is a failed request, like an error status: the SLO gates count
it. Regression answers a number per row; classification a class label among the class probabilities
it returns (the service's response shapes: ``prediction``/``predictions``, ``probabilities``).
"""

from __future__ import annotations

from typing import Any, Protocol

from contracts.model import Task


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_label_of(label: object, probabilities: object) -> bool:
    """A label that is one of the classes of a {label: probability} mapping of numbers."""
    return (
        isinstance(label, str)
        and isinstance(probabilities, dict)
        and label in probabilities
        and all(_is_number(p) for p in probabilities.values())
    )


class Answers(Protocol):
    """The check of a task's answers; each method returns why a body fails, or None when it holds."""

    def single(self, body: dict[str, Any]) -> str | None: ...

    def batch(self, body: dict[str, Any], expected: int) -> str | None: ...


def _predictions(body: dict[str, Any], expected: int) -> list[Any] | None:
    predictions = body.get("predictions")
    return predictions if isinstance(predictions, list) and len(predictions) == expected else None


class RegressionAnswers:
    """A numeric ``prediction``; one numeric entry of ``predictions`` per row sent."""

    def single(self, body: dict[str, Any]) -> str | None:
        return None if _is_number(body.get("prediction")) else "response body lacks a numeric 'prediction'"

    def batch(self, body: dict[str, Any], expected: int) -> str | None:
        predictions = _predictions(body, expected)
        if predictions is None:
            return f"response body lacks 'predictions' for {expected} rows"
        if not all(_is_number(value) for value in predictions):
            return "response 'predictions' are not all numbers"
        return None


class ClassificationAnswers:
    """A label ``prediction`` among its ``probabilities``; per row sent, one label and its probabilities."""

    def single(self, body: dict[str, Any]) -> str | None:
        if _is_label_of(body.get("prediction"), body.get("probabilities")):
            return None
        return "response body lacks a class 'prediction' among its 'probabilities'"

    def batch(self, body: dict[str, Any], expected: int) -> str | None:
        predictions = _predictions(body, expected)
        probabilities = body.get("probabilities")
        if predictions is None or not isinstance(probabilities, list) or len(probabilities) != expected:
            return f"response body lacks 'predictions' and 'probabilities' for {expected} rows"
        if not all(_is_label_of(label, row) for label, row in zip(predictions, probabilities, strict=True)):
            return "response 'predictions' are not all class labels among their 'probabilities'"
        return None


ANSWERS: dict[Task, Answers] = {"regression": RegressionAnswers(), "classification": ClassificationAnswers()}
