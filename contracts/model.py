"""The model contract (``contract.json``): what a model takes, what it answers, and the hard limits.

Training derives it from the example's declarations and the training data, and records it next to
the model; the service builds its request schema from it (:func:`contracts.request.request_model`).
Hard limits reject a request: every value must be a finite number, and each feature may declare
bounds (California's bounding box for the housing example). Soft limits (the training range) live in
``feature_stats.json`` and only warn.
"""

from __future__ import annotations

import keyword
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from contracts.artifacts import Artifact

Task = Literal["regression", "classification"]
FeatureType = Literal["float", "integer"]


class FeatureSpec(BaseModel):
    """One input column: its name in requests and in the model, its type and its hard bounds."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    name: str = Field(
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="Column and request field name: letters, digits and underscores, not a Python keyword.",
    )
    type: FeatureType = Field(default="float", description="float, or integer (whole numbers only).")
    description: str = Field(default="", description="What the value means, with its unit.")
    minimum: float | None = Field(default=None, description="Smallest value accepted (inclusive).")
    maximum: float | None = Field(default=None, description="Largest value accepted (inclusive).")

    @model_validator(mode="after")
    def _check(self) -> Self:
        if keyword.iskeyword(self.name):
            raise ValueError(f"feature name {self.name!r} is a Python keyword")
        if self.minimum is not None and self.maximum is not None and self.minimum > self.maximum:
            raise ValueError(f"feature {self.name!r}: minimum {self.minimum} exceeds maximum {self.maximum}")
        return self


class ModelContract(Artifact):
    """Inputs, task and outputs of one trained model, in the model's feature order."""

    schema_version: Literal[1] = Field(default=1, description="Format of this file.")
    example: str = Field(min_length=1, description="The example (folder) the model was trained from.")
    task: Task = Field(description="regression: one number per row; classification: a label per row.")
    features: list[FeatureSpec] = Field(min_length=1, description="Inputs, in the model's column order.")
    target: str = Field(min_length=1, description="Name of what the model predicts (the target column).")
    description: str = Field(default="", description="One line: what the model predicts, with its unit.")
    class_labels: list[str] = Field(
        default_factory=list,
        description="Classification: the labels the model can answer, in its probability order.",
    )

    @model_validator(mode="after")
    def _check(self) -> Self:
        names = self.feature_names
        if len(set(names)) != len(names):
            raise ValueError(f"feature names repeat: {sorted({n for n in names if names.count(n) > 1})}")
        if self.task == "classification":
            if len(self.class_labels) < 2 or len(set(self.class_labels)) != len(self.class_labels):
                raise ValueError("a classification contract needs at least two distinct class labels")
        elif self.class_labels:
            raise ValueError("a regression contract has no class labels")
        return self

    @property
    def feature_names(self) -> list[str]:
        return [feature.name for feature in self.features]
