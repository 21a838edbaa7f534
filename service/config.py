"""Settings of the prediction service (env prefix ``TABULA_SERVICE_``)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

# Beyond the service's own deadlines, before BentoML's request timeout answers 504.
SERVER_TIMEOUT_MARGIN_SECONDS = 2.0


class ServiceSettings(BaseSettings):
    """Everything the prediction service can be told from its environment."""

    model_config = SettingsConfigDict(env_prefix="TABULA_SERVICE_", extra="ignore", frozen=True)

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
    # A memory bound, not the admission policy (that is by cost, below): each held request keeps its
    # connection and up to 64 KiB of unread body in the server's buffers.
    concurrency_limit: int = Field(
        default=1024,
        gt=0,
        description=(
            "Prediction requests a worker holds at once, admitted or waiting; more are shed at once with 503."
        ),
    )
    admission_target_seconds: float = Field(
        default=0.1,
        gt=0.0,
        description=(
            "Worker time admitted at once, in seconds as measured from recent requests; beyond it "
            "requests wait. It bounds the queueing of admitted requests: keep it well below the latency SLO."
        ),
    )
    admission_wait_seconds: float = Field(
        default=0.1,
        ge=0.0,
        description=(
            "Longest a request may wait, from its arrival, and still be admitted; later it is refused. "
            "Accepted requests take at most about this plus the target: keep both within the latency SLO."
        ),
    )
    admission_refusal_seconds: float = Field(
        default=1.5,
        ge=0.0,
        description=(
            "When a refused waiting request gets its 503, counted from its arrival as estimated from the "
            "event loop's lag (at least the wait; spread by 10% either way). Later slows a crowd of "
            "clients that retry at once (each 503 costs the worker most of what a single-row prediction "
            "does: the HTTP layers); sooner tells them sooner. Keep it below the clients' timeout."
        ),
    )
    admission_order: Literal["lifo", "fifo"] = Field(
        default="lifo",
        description=(
            "Order of waiting requests whose clients have used the worker equally (connections share the "
            "worker by work, fair queueing): newest first keeps accepted latency near the target under "
            "overload and refuses the oldest; oldest first makes every admitted request wait its turn."
        ),
    )
    admission_fair_share: bool = Field(
        default=True,
        description=(
            "Share the worker between connections by work while they wait (fair queueing): a client that "
            "sends a mix keeps its mix under overload, and no client's traffic can starve another's. Off: "
            "every request waits alone, newest first, so under a crowd the accepted are the newest and "
            "their latency is lower, but a crowd of small requests takes the worker from large ones."
        ),
    )
    # Why 10,000: see service/collector.py.
    gc_young_threshold: int = Field(
        default=10_000,
        gt=0,
        description=(
            "Allocations (net of frees) between two garbage collections of young objects (Python's default: "
            "700). Higher means fewer collections of the objects of requests in flight, at the cost of up "
            "to this many objects of unreachable cycles kept a little longer."
        ),
    )
    request_timeout_seconds: float = Field(
        default=2.0,
        gt=0.0,
        description=(
            "Longest a request's body may take to arrive and its prediction to wait and run: a body not "
            "received in time is answered with 408, a prediction not done in time with 503."
        ),
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
        description="Base image written into the Bento by `tabula build` (unset: python:3.11-slim).",
    )
    log_format: Literal["json", "console"] = Field(
        default="json", description="Service log lines as JSON objects or human-readable text."
    )
    log_level: str = Field(default="INFO", description="Level of the service logger.")
    # Shadow release (service/shadow.py): what a stable pod mirrors, read again from the control file
    # while it runs, so a shadow starts and stops without restarting the stable pods.
    shadow_track: bool = Field(
        default=False,
        description="This pod is a shadow: requests marked X-Tabula-Mirror are paired with the champion's "
        "answer and kept out of the live series. Elsewhere the mark only stops a request from being "
        "mirrored, so no client can hide its requests from the live SLO.",
    )
    shadow_url: str | None = Field(
        default=None,
        description="Base URL of the shadow Service copies are sent to (unset: no mirroring unless the "
        "control file names one).",
    )
    shadow_sample_rate: float = Field(
        default=0.0, ge=0.0, le=1.0, description="Share of answered prediction requests copied to the shadow."
    )
    shadow_control_file: Path | None = Field(
        default=None,
        description="JSON file (a mounted ConfigMap) with `url` and `sampleRate`, overriding the two "
        "settings above while it exists; re-read every shadow_control_seconds.",
    )
    shadow_control_seconds: float = Field(
        default=5.0, gt=0.0, description="Least time between two reads of the shadow control file."
    )
    shadow_queue_size: int = Field(
        default=1000, gt=0, description="Copies waiting for a sender, per worker; more are dropped."
    )
    shadow_senders: int = Field(
        default=2, gt=0, description="Threads per worker posting copies to the shadow (copies in flight)."
    )
    shadow_timeout_seconds: float = Field(
        default=1.0, gt=0.0, description="Longest a copy may take to be answered by the shadow; then dropped."
    )
    shadow_backoff_seconds: float = Field(
        default=1.0,
        gt=0.0,
        description="First pause after the shadow could not be reached; it doubles while the shadow stays "
        "unreachable, and copies are dropped meanwhile.",
    )
    shadow_backoff_max_seconds: float = Field(
        default=30.0, gt=0.0, description="Longest pause between two attempts to reach the shadow."
    )

    @property
    def server_timeout_seconds(self) -> float:
        """BentoML's own request timeout: just above the longest this service lets a request take.

        Every prediction is answered within the refusal delay plus the request timeout; the margin
        leaves room to read a large body and write the answer.
        """
        return self.admission_refusal_seconds + self.request_timeout_seconds + SERVER_TIMEOUT_MARGIN_SECONDS
