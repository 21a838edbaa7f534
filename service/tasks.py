"""What differs between serving a regressor and a classifier, behind one small protocol.

A model's raw outputs are one array per request: a number per row (regression) or one probability
per class and row, in the contract's label order (classification). The task says how scikit-learn
computes them, how they compare with the golden set, and how they become response fields, metrics
and prediction-log entries (:class:`Answers`). Everything else in the service is task-agnostic.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from contracts.artifacts import GoldenSet
from contracts.model import ModelContract
from service.metrics import ServiceMetrics

Outputs = npt.NDArray[np.float64]


class Answers(Protocol):
    """The outputs of one request, as the response, the metrics and the prediction log take them."""

    def single(self) -> dict[str, Any]:
        """Response fields of a one-row request."""

    def batch(self) -> dict[str, Any]:
        """Response fields of a batch request, in row order."""

    def observe(self, metrics: ServiceMetrics, route: str) -> None: ...

    def logged(self) -> dict[str, Any]:
        """Fields of the JSON log line when its inputs are sampled."""

    def rows(self) -> list[dict[str, Any]]:
        """Prediction-log database columns, one mapping per row."""


class ServedTask(Protocol):
    def sklearn_predictor(self, estimator: Any) -> Callable[[npt.NDArray[np.float64]], Outputs]:
        """scikit-learn's own computation of the outputs (predictions, or class probabilities)."""

    def golden_error(self, outputs: Outputs, golden: GoldenSet) -> float:
        """Largest absolute difference from the golden outputs (infinite if a label differs)."""

    def answers(self, outputs: Outputs) -> Answers: ...


@dataclass(frozen=True)
class RegressionAnswers:
    values: list[float]

    def single(self) -> dict[str, Any]:
        return {"prediction": self.values[0]}

    def batch(self) -> dict[str, Any]:
        return {"predictions": self.values}

    def observe(self, metrics: ServiceMetrics, route: str) -> None:
        metrics.observe_predictions(route, self.values)

    def logged(self) -> dict[str, Any]:
        return {"outputs": self.values}

    def rows(self) -> list[dict[str, Any]]:
        return [{"prediction": value} for value in self.values]


@dataclass(frozen=True)
class Regression:
    def sklearn_predictor(self, estimator: Any) -> Callable[[npt.NDArray[np.float64]], Outputs]:
        def predict(rows: npt.NDArray[np.float64]) -> Outputs:
            return np.asarray(estimator.predict(rows), dtype=np.float64).reshape(-1)

        return predict

    def golden_error(self, outputs: Outputs, golden: GoldenSet) -> float:
        return float(np.max(np.abs(outputs - np.asarray(golden.predictions))))

    def answers(self, outputs: Outputs) -> RegressionAnswers:
        return RegressionAnswers(outputs.tolist())


@dataclass(frozen=True)
class ClassificationAnswers:
    labels: list[str]
    probabilities: list[dict[str, float]]
    confidences: list[float]

    def single(self) -> dict[str, Any]:
        return {"prediction": self.labels[0], "probabilities": self.probabilities[0]}

    def batch(self) -> dict[str, Any]:
        return {"predictions": self.labels, "probabilities": self.probabilities}

    def observe(self, metrics: ServiceMetrics, route: str) -> None:
        metrics.observe_classes(route, self.labels, self.confidences)

    def logged(self) -> dict[str, Any]:
        return {"outputs": self.labels, "probabilities": self.probabilities}

    def rows(self) -> list[dict[str, Any]]:
        return [
            {"label": label, "probabilities": probabilities}
            for label, probabilities in zip(self.labels, self.probabilities, strict=True)
        ]


@dataclass(frozen=True)
class Classification:
    """Probabilities in the contract's label order; the answered label is the most probable one."""

    class_labels: tuple[str, ...]

    def sklearn_predictor(self, estimator: Any) -> Callable[[npt.NDArray[np.float64]], Outputs]:
        classes = [str(label) for label in estimator.classes_]
        if classes != list(self.class_labels):
            raise ValueError(f"model classes {classes} differ from the contract's {list(self.class_labels)}")

        def predict(rows: npt.NDArray[np.float64]) -> Outputs:
            return np.asarray(estimator.predict_proba(rows), dtype=np.float64)

        return predict

    def golden_error(self, outputs: Outputs, golden: GoldenSet) -> float:
        if list(golden.classes) != list(self.class_labels):
            return math.inf
        labels = [self.class_labels[index] for index in np.argmax(outputs, axis=1)]
        if labels != golden.labels:
            return math.inf
        return float(np.max(np.abs(outputs - np.asarray(golden.probabilities))))

    def answers(self, outputs: Outputs) -> ClassificationAnswers:
        top = np.argmax(outputs, axis=1)
        labels = self.class_labels
        return ClassificationAnswers(
            labels=[labels[index] for index in top.tolist()],
            probabilities=[dict(zip(labels, row, strict=True)) for row in outputs.tolist()],
            confidences=outputs[np.arange(outputs.shape[0]), top].tolist(),
        )


def served_task(contract: ModelContract) -> ServedTask:
    if contract.task == "regression":
        return Regression()
    return Classification(tuple(contract.class_labels))
