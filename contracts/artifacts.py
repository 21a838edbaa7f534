"""Artifacts that travel with every model, from the training run to the serving container.

These models are the contract between ``training`` (which writes them into the MLflow run)
and ``service`` (which reads them from the Bento): feature statistics for input checks and
drift reference, a golden set for readiness checks, and the model contract
(:mod:`contracts.model`, ``contract.json``). Keep this module free of heavy imports: the service
image ships it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

FEATURE_STATS_FILE = "feature_stats.json"
GOLDEN_SET_FILE = "golden_set.json"
CONTRACT_FILE = "contract.json"
# Quantiles recorded per feature; the service's soft range is [q001, q999].
QUANTILES: tuple[float, ...] = (0.001, 0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99, 0.999)


class Artifact(BaseModel):
    """A JSON file that travels with the model: strict, immutable, written and read whole."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    def write(self, path: Path) -> Path:
        path.write_text(self.model_dump_json(indent=2), encoding="utf-8")
        return path

    @classmethod
    def read(cls, path: Path) -> Self:
        return cls.model_validate(json.loads(path.read_text(encoding="utf-8")))


class Histogram(BaseModel):
    """Reference distribution of one feature: ``len(bin_edges) == len(proportions) + 1``.

    The outer edges are -inf/+inf so every value lands in a bin; proportions sum to 1.
    """

    # JSON has no infinity: the open outer edges are written as "-Infinity"/"Infinity".
    model_config = ConfigDict(extra="forbid", frozen=True, ser_json_inf_nan="strings")

    bin_edges: list[float] = Field(description="Ascending bin edges, first -inf and last +inf.")
    proportions: list[float] = Field(description="Share of training rows in each bin.")

    @model_validator(mode="after")
    def _check_shape(self) -> Self:
        if len(self.bin_edges) != len(self.proportions) + 1:
            raise ValueError("histogram needs exactly one more edge than proportions")
        if any(b <= a for a, b in zip(self.bin_edges, self.bin_edges[1:], strict=False)):
            raise ValueError("histogram bin edges must be strictly ascending")
        if abs(sum(self.proportions) - 1.0) > 1e-6:
            raise ValueError("histogram proportions must sum to 1")
        return self


class FeatureSummary(BaseModel):
    """Statistics of one feature over the training split."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    min: float
    max: float
    mean: float
    std: float
    quantiles: dict[str, float] = Field(description="Quantile level (as a string, e.g. '0.5') -> value.")
    histogram: Histogram


class FeatureStatistics(Artifact):
    """Per-feature statistics of the training data, in the model's feature order."""

    n_rows: int = Field(gt=0, description="Training rows the statistics were computed on.")
    features: list[FeatureSummary]
    target: str = Field(description="Name of the target column the model predicts.")

    @property
    def feature_names(self) -> list[str]:
        return [feature.name for feature in self.features]

    def by_name(self) -> dict[str, FeatureSummary]:
        return {feature.name: feature for feature in self.features}


class GoldenSet(Artifact):
    """Inputs with the outputs the trained model gave for them.

    A serving process is ready only when it reproduces them: a regression model its ``predictions``
    within ``tolerance``; a classifier its ``labels`` exactly and its ``probabilities`` (one per class,
    in ``classes`` order) within ``tolerance``.
    """

    feature_names: list[str]
    rows: list[list[float]] = Field(min_length=1, description="Inputs, in feature_names order.")
    predictions: list[float] = Field(default_factory=list, description="Regression: one prediction per row.")
    classes: list[str] = Field(default_factory=list, description="Classification: labels, probability order.")
    labels: list[str] = Field(default_factory=list, description="Classification: predicted label per row.")
    probabilities: list[list[float]] = Field(
        default_factory=list, description="Classification: per row, one probability per class."
    )
    tolerance: float = Field(default=1e-6, gt=0, description="Largest absolute difference accepted.")

    @property
    def is_classification(self) -> bool:
        return bool(self.classes)

    @model_validator(mode="after")
    def _check_shape(self) -> Self:
        if any(len(row) != len(self.feature_names) for row in self.rows):
            raise ValueError("every golden row needs one value per feature")
        if not self.is_classification:
            if len(self.rows) != len(self.predictions) or self.labels or self.probabilities:
                raise ValueError("golden set needs one prediction per row")
            return self
        if self.predictions:
            raise ValueError("a classifier's golden set holds labels and probabilities, not predictions")
        if len(self.labels) != len(self.rows) or len(self.probabilities) != len(self.rows):
            raise ValueError("golden set needs one label and one probability row per row")
        if any(label not in self.classes for label in self.labels):
            raise ValueError("every golden label must be one of the classes")
        if any(len(row) != len(self.classes) for row in self.probabilities):
            raise ValueError("every probability row needs one probability per class")
        return self
