"""What differs between regression and classification, behind one small protocol.

Each task names its reported metrics, the metrics the promotion gate may decide on, how a model's
outputs are scored (predictions, or probabilities in the contract's class order) and what its golden
set records. Everything else in training is task-agnostic.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import pandas as pd

from contracts.artifacts import GoldenSet
from contracts.errors import ConfigError
from contracts.model import ModelContract

PerRow = Callable[[np.ndarray, np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Metric:
    """A metric the gate can bootstrap: the mean of a per-row value, then ``finish`` (sqrt for RMSE)."""

    name: str
    label: str
    higher_is_better: bool
    per_row: PerRow
    finish: Callable[[np.ndarray], np.ndarray] = np.asarray

    def value(self, targets: np.ndarray, scores: np.ndarray) -> float:
        return float(self.finish(np.asarray(self.per_row(targets, scores).mean())))

    def better(self, candidate: float, incumbent: float) -> bool:
        return candidate > incumbent if self.higher_is_better else candidate < incumbent


def _squared_error(targets: np.ndarray, scores: np.ndarray) -> np.ndarray:
    errors: np.ndarray = np.asarray(scores, dtype="float64") - np.asarray(targets, dtype="float64")
    return errors**2


def _absolute_error(targets: np.ndarray, scores: np.ndarray) -> np.ndarray:
    errors: np.ndarray = np.asarray(scores, dtype="float64") - np.asarray(targets, dtype="float64")
    absolute: np.ndarray = np.abs(errors)
    return absolute


def _true_class_probability(targets: np.ndarray, scores: np.ndarray) -> np.ndarray:
    chosen: np.ndarray = scores[np.arange(targets.size), targets]
    return chosen


def _log_loss(targets: np.ndarray, scores: np.ndarray) -> np.ndarray:
    # Clipped as scikit-learn's log_loss does, so a confident mistake costs much but not infinity.
    eps = np.finfo("float64").eps
    loss: np.ndarray = -np.log(np.clip(_true_class_probability(targets, scores), eps, 1.0))
    return loss


def _correct(targets: np.ndarray, scores: np.ndarray) -> np.ndarray:
    correct: np.ndarray = (np.argmax(scores, axis=1) == targets).astype("float64")
    return correct


RMSE = Metric("rmse", "RMSE", higher_is_better=False, per_row=_squared_error, finish=np.sqrt)
MAE = Metric("mae", "MAE", higher_is_better=False, per_row=_absolute_error)
LOG_LOSS = Metric("log_loss", "log-loss", higher_is_better=False, per_row=_log_loss)
ACCURACY = Metric("accuracy", "accuracy", higher_is_better=True, per_row=_correct)
# How tables and reasons name each metric.
LABELS = {
    "rmse": "RMSE",
    "mae": "MAE",
    "r2": "R2",
    "log_loss": "log-loss",
    "accuracy": "accuracy",
    "f1_macro": "macro F1",
}
# Metrics reported for every candidate and version, in table order.
REPORTED: dict[str, tuple[str, ...]] = {
    "regression": ("rmse", "mae", "r2"),
    "classification": ("log_loss", "accuracy", "f1_macro"),
}


class TaskKind(Protocol):
    """One implementation per task; built from the contract so it knows the class labels."""

    @property
    def contract(self) -> ModelContract: ...
    @property
    def estimator_kind(self) -> str:
        """The scikit-learn estimator family candidates must belong to: regressor or classifier."""

    @property
    def reported(self) -> tuple[str, ...]: ...
    @property
    def gate_metrics(self) -> dict[str, Metric]: ...
    @property
    def default_metric(self) -> str: ...

    def targets(self, y: pd.Series) -> np.ndarray:
        """The target in the form the metrics take (numbers, or class indices)."""

    def scores(self, model: Any, features: pd.DataFrame) -> np.ndarray:
        """What the model outputs for scoring: predictions, or class probabilities in contract order."""

    def quality(self, y: pd.Series, scores: np.ndarray) -> dict[str, float]:
        """Every reported metric, by name."""

    def golden_set(self, model: Any, sample: pd.DataFrame) -> GoldenSet:
        """The model's own outputs for ``sample``, which a serving copy must reproduce."""


@dataclass(frozen=True)
class Regression:
    contract: ModelContract
    estimator_kind: str = "regressor"
    reported: tuple[str, ...] = REPORTED["regression"]
    default_metric: str = "rmse"

    @property
    def gate_metrics(self) -> dict[str, Metric]:
        return {"rmse": RMSE, "mae": MAE}

    def targets(self, y: pd.Series) -> np.ndarray:
        return np.asarray(y, dtype="float64")

    def scores(self, model: Any, features: pd.DataFrame) -> np.ndarray:
        return np.asarray(model.predict(features), dtype="float64")

    def quality(self, y: pd.Series, scores: np.ndarray) -> dict[str, float]:
        truth = self.targets(y)
        errors = truth - scores
        sum_squares = float(np.sum((truth - truth.mean()) ** 2))
        return {
            "rmse": float(np.sqrt(np.mean(errors**2))),
            "mae": float(np.mean(np.abs(errors))),
            "r2": 1.0 - float(np.sum(errors**2)) / sum_squares if sum_squares else 0.0,
        }

    def golden_set(self, model: Any, sample: pd.DataFrame) -> GoldenSet:
        return GoldenSet(
            feature_names=[str(column) for column in sample.columns],
            rows=sample.to_numpy(dtype="float64").tolist(),
            predictions=[float(value) for value in model.predict(sample)],
        )


@dataclass(frozen=True)
class Classification:
    contract: ModelContract
    estimator_kind: str = "classifier"
    reported: tuple[str, ...] = REPORTED["classification"]
    default_metric: str = "log_loss"

    @property
    def gate_metrics(self) -> dict[str, Metric]:
        return {"log_loss": LOG_LOSS, "accuracy": ACCURACY}

    def targets(self, y: pd.Series) -> np.ndarray:
        index = {label: position for position, label in enumerate(self.contract.class_labels)}
        unknown = sorted(set(y.astype(str)) - set(index))
        if unknown:
            raise ValueError(f"labels {unknown} are not among the model's classes {list(index)}")
        return np.array([index[label] for label in y.astype(str)], dtype="int64")

    def scores(self, model: Any, features: pd.DataFrame) -> np.ndarray:
        classes = [str(label) for label in model.classes_]
        if classes != self.contract.class_labels:
            raise ValueError(
                f"model classes {classes} differ from the contract's {self.contract.class_labels}"
            )
        return np.asarray(model.predict_proba(features), dtype="float64")

    def quality(self, y: pd.Series, scores: np.ndarray) -> dict[str, float]:
        from sklearn.metrics import f1_score

        truth = self.targets(y)
        predicted = np.argmax(scores, axis=1)
        labels = list(range(len(self.contract.class_labels)))
        return {
            "log_loss": LOG_LOSS.value(truth, scores),
            "accuracy": ACCURACY.value(truth, scores),
            "f1_macro": float(f1_score(truth, predicted, labels=labels, average="macro", zero_division=0)),
        }

    def golden_set(self, model: Any, sample: pd.DataFrame) -> GoldenSet:
        return GoldenSet(
            feature_names=[str(column) for column in sample.columns],
            rows=sample.to_numpy(dtype="float64").tolist(),
            classes=list(self.contract.class_labels),
            labels=[str(label) for label in model.predict(sample)],
            probabilities=self.scores(model, sample).tolist(),
        )


def task_for(contract: ModelContract) -> TaskKind:
    return Regression(contract) if contract.task == "regression" else Classification(contract)


def gate_metric(task: TaskKind, name: str | None) -> Metric:
    """The metric ``promotion.metric`` names (default: the task's), refused when it does not fit the task."""
    chosen = name or task.default_metric
    if chosen not in task.gate_metrics:
        raise ConfigError(
            f"promotion.metric {chosen!r} does not apply to {task.contract.task}; "
            f"use one of {sorted(task.gate_metrics)}"
        )
    return task.gate_metrics[chosen]
