"""Settings of the load test: target, user mix, SLO gates and output, from ``TABULA_LOAD_*``."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Self

from pydantic import AnyHttpUrl, Field, FilePath, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from contracts.errors import ConfigError
from contracts.examples import DEFAULT_EXAMPLE, EXAMPLES_ROOT, example_folder

# Locust's --run-time syntax: "90", "90s", "1m30s", "1h".
_RUN_TIME = re.compile(r"^(?:\d+|(?:\d+h)?(?:\d+m)?(?:\d+s)?)$")
# An example folder's request rows (load/payloads.py writes them).
PAYLOADS_FILE = "payloads.json"
DEFAULT_PAYLOADS_FILE = EXAMPLES_ROOT / DEFAULT_EXAMPLE / PAYLOADS_FILE
# Scenario tags of the locustfile's tasks.
TASK_TAGS: tuple[str, ...] = ("single", "batch")


class LoadSettings(BaseSettings):
    """Everything a headless load run needs; the CLI options override these values."""

    model_config = SettingsConfigDict(env_prefix="TABULA_LOAD_", extra="forbid")

    url: AnyHttpUrl = Field(
        default=AnyHttpUrl("http://127.0.0.1:3000"),
        description="Base URL of the tabula service under test.",
    )
    users: int = Field(default=10, ge=1, description="Number of concurrent simulated users.")
    spawn_rate: float = Field(default=5.0, gt=0, description="Users started per second until `users` run.")
    run_time: str = Field(
        default="30s",
        description="How long the run lasts, in Locust's syntax (e.g. '45', '30s', '1m30s').",
    )
    tags: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Locust task tags to run ('single', 'batch'); empty runs every task.",
    )
    single_weight: int = Field(default=4, ge=0, description="Relative weight of the one-row /predict task.")
    batch_weight: int = Field(default=1, ge=0, description="Relative weight of the /predict/batch task.")
    batch_size: int = Field(default=32, ge=1, description="Rows in each /predict/batch request.")
    request_timeout_s: float = Field(
        default=10.0,
        gt=0,
        description="Seconds a request may take before Locust counts it as failed.",
    )
    wait_min_s: float = Field(default=0.0, ge=0, description="Shortest pause of a user between two tasks.")
    wait_max_s: float = Field(default=0.1, ge=0, description="Longest pause of a user between two tasks.")
    p95_ms: float = Field(default=200.0, gt=0, description="SLO gate: highest accepted p95 latency, in ms.")
    p99_ms: float = Field(default=500.0, gt=0, description="SLO gate: highest accepted p99 latency, in ms.")
    max_error_rate: float = Field(
        default=0.01,
        ge=0,
        le=1,
        description="SLO gate: highest accepted share of failed requests (0..1).",
    )
    min_rps: float = Field(default=1.0, ge=0, description="SLO gate: lowest accepted throughput, requests/s.")
    out: Path = Field(
        default=Path("load-report"),
        description="Folder for Locust's CSV stats, its HTML report and the gate summary JSON.",
    )
    example: str = Field(
        default=DEFAULT_EXAMPLE,
        min_length=1,
        description="Example of the served model (housing, iris, or a folder): its payloads.json rows, or "
        "rows drawn from its held-out test split, and the answers to expect (a number or a class label).",
    )
    payloads_file: FilePath | None = Field(
        default=None,
        description="Request rows instead of the example's: load/payloads.py's format, or a model's "
        "golden_set.json.",
    )

    @field_validator("run_time")
    @classmethod
    def _check_run_time(cls, value: str) -> str:
        if not value or not _RUN_TIME.match(value):
            raise ValueError("run_time must look like '45', '30s', '2m' or '1m30s'")
        return value

    @field_validator("example")
    @classmethod
    def _check_example(cls, value: str) -> str:
        try:
            example_folder(value)
        except ConfigError as error:
            raise ValueError(str(error)) from error
        return value

    @field_validator("tags", mode="before")
    @classmethod
    def _split_tags(cls, value: object) -> object:
        # Accept "single,batch" from the environment or the CLI as well as a JSON list.
        if isinstance(value, str):
            return [tag.strip() for tag in value.split(",") if tag.strip()]
        return value

    @model_validator(mode="after")
    def _check_mix(self) -> Self:
        if self.single_weight + self.batch_weight == 0:
            raise ValueError("single_weight and batch_weight cannot both be 0")
        if self.run_time_seconds() == 0:
            raise ValueError("run_time must be at least one second")
        if unknown := sorted(set(self.tags) - set(TASK_TAGS)):
            raise ValueError(f"unknown tags {unknown}; the locustfile's tags are {list(TASK_TAGS)}")
        if self.wait_max_s < self.wait_min_s:
            raise ValueError("wait_max_s must not be below wait_min_s")
        return self

    @property
    def base_url(self) -> str:
        """The service URL without a trailing slash, ready to prefix a request path."""
        return str(self.url).rstrip("/")

    def run_time_seconds(self) -> int:
        """The run time in seconds (a bare number is seconds, as in Locust)."""
        if self.run_time.isdigit():
            return int(self.run_time)
        units = {"h": 3600, "m": 60, "s": 1}
        return sum(int(amount) * units[unit] for amount, unit in re.findall(r"(\d+)([hms])", self.run_time))
