"""The model card and the structured error body of the prediction API.

The prediction bodies are built from the served model's contract (:mod:`contracts.request`): hard
limits reject a request there; soft limits (the training range) are checked later by
:mod:`service.ranges` and only produce warnings.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field, ValidationError

from contracts.model import Task


class FeatureStatsSummary(BaseModel):
    name: str
    min: float
    max: float
    mean: float
    std: float
    soft_low: float
    soft_high: float


class ModelCard(BaseModel):
    name: str
    version: str
    task: Task
    target: str = Field(description="What the model predicts.")
    class_labels: list[str] = Field(description="Classification: the labels, in probability order.")
    run_id: str
    alias: str | None
    metrics: dict[str, float]
    feature_importances: dict[str, float] | None
    feature_stats: list[FeatureStatsSummary]
    training_rows: int
    bento_model_tag: str
    predictor: str = Field(description="compiled-trees (exact fast path for small requests) or scikit-learn.")
    loaded_at: datetime


class ErrorDetail(BaseModel):
    field: str | None = Field(description="Dotted path of the offending field, if any.")
    constraint: str = Field(description="Name of the violated rule, e.g. greater_than_equal, missing.")
    value: Any = Field(default=None, description="Value received (non-finite numbers as strings).")
    message: str


class ErrorInfo(BaseModel):
    type: str
    message: str
    details: list[ErrorDetail]


class ErrorBody(BaseModel):
    error: ErrorInfo


def json_safe(value: Any) -> Any:
    """Received values echoed in errors must stay valid JSON (no NaN/Infinity, no huge blobs)."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    if isinstance(value, (dict, list)):
        return f"<{type(value).__name__} of {len(value)} items>"
    if isinstance(value, str) and len(value) > 200:
        return value[:200] + "..."
    return value


def details_from(error: ValidationError) -> list[ErrorDetail]:
    """One detail per pydantic error, naming field, constraint and received value."""
    return [
        ErrorDetail(
            field=".".join(str(part) for part in item["loc"]) or None,
            constraint=item["type"],
            # A missing field has no value; unparsable JSON's "value" would be the whole body.
            value=None if item["type"] in ("missing", "json_invalid") else json_safe(item.get("input")),
            message=item["msg"],
        )
        for item in error.errors(include_url=False)
    ]
