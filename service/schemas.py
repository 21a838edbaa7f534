"""Request and response bodies of the prediction API, and the structured error body.

Hard limits live here (pydantic): finite numbers, non-negative counts and averages, a location
inside California's bounding box, no unknown fields. Soft limits (the training range) are
checked later by :mod:`service.ranges` and only produce warnings.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

FEATURES: tuple[str, ...] = (
    "MedInc",
    "HouseAge",
    "AveRooms",
    "AveBedrms",
    "Population",
    "AveOccup",
    "Latitude",
    "Longitude",
)
# California's bounding box, rounded outwards.
LATITUDE_RANGE = (32.0, 42.5)
LONGITUDE_RANGE = (-125.0, -114.0)
# Validation context key carrying the batch limit, so it follows the settings at run time.
MAX_ROWS_CONTEXT = "max_rows"


class HouseFeatures(BaseModel):
    """One district, with the eight features named as in scikit-learn's California Housing set."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False, frozen=True)

    MedInc: float = Field(ge=0, description="Median income in the block group, in $10,000.")
    HouseAge: float = Field(ge=0, description="Median house age in the block group, in years.")
    AveRooms: float = Field(ge=0, description="Average rooms per household.")
    AveBedrms: float = Field(ge=0, description="Average bedrooms per household.")
    Population: float = Field(ge=0, description="Block group population.")
    AveOccup: float = Field(ge=0, description="Average household members.")
    Latitude: float = Field(
        ge=LATITUDE_RANGE[0], le=LATITUDE_RANGE[1], description="Latitude, inside California."
    )
    Longitude: float = Field(
        ge=LONGITUDE_RANGE[0], le=LONGITUDE_RANGE[1], description="Longitude, inside California."
    )

    def as_row(self) -> list[float]:
        return [self.MedInc, self.HouseAge, self.AveRooms, self.AveBedrms,
                self.Population, self.AveOccup, self.Latitude, self.Longitude]  # fmt: skip


class BatchRequest(BaseModel):
    """Several districts to predict in one call."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    rows: list[HouseFeatures] = Field(
        min_length=1, description="Districts to predict, at most HOUSING_SERVICE_MAX_BATCH_ROWS (1000)."
    )

    @field_validator("rows", mode="before")
    @classmethod
    def _at_most_max_rows(cls, rows: Any, info: ValidationInfo) -> Any:
        # Checked before the rows themselves so an oversized batch costs no per-row validation.
        limit = (info.context or {}).get(MAX_ROWS_CONTEXT)
        if isinstance(rows, list) and limit is not None and len(rows) > limit:
            raise ValueError(f"at most {limit} rows per batch, got {len(rows)}")
        return rows


class RangeWarning(BaseModel):
    """A feature outside the range seen in training: accepted, but the prediction is less reliable."""

    feature: str
    value: float
    low: float = Field(description="Lower end of the training range (0.1% quantile).")
    high: float = Field(description="Upper end of the training range (99.9% quantile).")
    row: int | None = Field(default=None, description="Row index, for batch requests.")


class PredictionResponse(BaseModel):
    prediction: float = Field(description="Predicted median house value, in $100,000.")
    prediction_usd: float = Field(description="Predicted median house value, in US dollars.")
    prediction_id: str = Field(description="UUID of this prediction, also in the logs.")
    model_name: str
    model_version: str
    timestamp: datetime
    warnings: list[RangeWarning]


class BatchResponse(BaseModel):
    predictions: list[float] = Field(description="Predictions in $100,000, in request order.")
    count: int
    model_name: str
    model_version: str
    warnings: list[RangeWarning]


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
