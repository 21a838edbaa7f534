"""Settings of the prediction service (env prefix ``HOUSING_SERVICE_``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ServiceSettings(BaseSettings):
    """Everything the prediction service can be told from its environment."""

    model_config = SettingsConfigDict(env_prefix="HOUSING_SERVICE_", extra="ignore", frozen=True)

    model_tag: str = Field(
        default="housing-price:latest",
        description="BentoML model to serve (name:version) unless the Bento pins one (build arg model_tag).",
    )
    max_batch_rows: int = Field(default=1000, gt=0, description="Most rows accepted by POST /predict/batch.")
    allow_extra_fields: bool = Field(
        default=False, description="Ignore unknown input fields instead of rejecting them with 422."
    )
    input_log_sample_rate: float = Field(
        default=0.0, ge=0.0, le=1.0, description="Share of predictions whose inputs and outputs are logged."
    )
    drift_window_size: int = Field(
        default=1000, gt=0, description="Recent input rows kept per feature to compute drift (PSI)."
    )
    drift_update_seconds: float = Field(
        default=5.0, ge=0.0, description="Least time between two recomputations of the drift gauges."
    )
    prediction_log_db_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL of the optional prediction-log database (unset: JSON lines only).",
    )
    prediction_log_queue_size: int = Field(
        default=10_000, gt=0, description="Records buffered for the database; beyond this they are dropped."
    )
    prediction_log_batch_size: int = Field(
        default=500, gt=0, description="Most records written to the database in one transaction."
    )
    prediction_log_flush_seconds: float = Field(
        default=1.0, gt=0.0, description="Longest wait before buffered records are written to the database."
    )
    # Requests beyond the limit wait on the event loop, not in a queue we could drop from: measured at twice
    # the capacity of full 1,000-row batches (~60/s), 256 let accepted requests wait 10 s, 32 kept p99 near
    # 1 s; 32 still serves 32 closed-loop clients (the benchmark's largest run) without shedding.
    concurrency_limit: int = Field(
        default=32,
        gt=0,
        description="Prediction requests in flight per worker; more are shed at once with 503.",
    )
    request_timeout_seconds: float = Field(
        default=2.0,
        gt=0.0,
        description="Longest a prediction may wait and run before it is answered with 503.",
    )
    max_request_bytes: int = Field(
        default=1_000_000, gt=0, description="Largest request body accepted; larger ones get 413."
    )
    # An answer given before the body is read (413, 415, shed 503) is preceded by reading the rest of
    # the body: closing with bytes unread makes the kernel reset the connection, and clients that send
    # the whole body before they read (urllib, http.client) lose the answer. 64 MiB holds a
    # 200,000-row batch (30 MB); at loopback speed draining 30 MB took well under a second.
    drain_max_bytes: int = Field(
        default=64 * 2**20,
        ge=0,
        description="Most unread body bytes read before an early answer; beyond them the connection closes.",
    )
    drain_seconds: float = Field(
        default=5.0,
        ge=0.0,
        description="Longest time spent reading an unread request body before an early answer.",
    )
    golden_tolerance: float | None = Field(
        default=None,
        gt=0.0,
        description="Largest golden-set error accepted for readiness (unset: the golden set's tolerance).",
    )
    predict_threads: int = Field(
        default=1, gt=0, description="OpenMP/BLAS threads per prediction; one suits single rows best."
    )
    log_predictions: bool = Field(default=True, description="Write one JSON log line per prediction request.")
    docker_base_image: str | None = Field(
        default=None,
        description="Base image written into the Bento by `housing build` (unset: python:3.11-slim).",
    )
    log_format: Literal["json", "console"] = Field(
        default="json", description="Service log lines as JSON objects or human-readable text."
    )
    log_level: str = Field(default="INFO", description="Level of the service logger.")
