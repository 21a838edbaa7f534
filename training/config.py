"""Settings of the training component: everything a Job needs comes from ``TABULA_*`` env vars."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Self

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from contracts.examples import DEFAULT_EXAMPLE, Example, load_example

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def default_tracking_uri() -> str:
    """The embedded store: SQLite backend inside the project folder, no server needed."""
    return f"sqlite:///{PROJECT_ROOT / '.mlflow' / 'mlflow.db'}"


class TrainingSettings(BaseSettings):
    """Configuration of ``tabula data|train|promote|models`` (env prefix ``TABULA_``).

    Fields left unset take the example's value (``examples/<example>/``): features, target,
    experiment, model name and params file. Build a changed copy with ``TrainingSettings(**fields)``,
    not ``model_copy``, when the example changes: only validation fills these in.
    """

    model_config = SettingsConfigDict(env_prefix="TABULA_", extra="ignore", populate_by_name=True)

    example: str = Field(
        default=DEFAULT_EXAMPLE,
        description="Example folder: a bundled one by name (housing, iris) or the path of your own.",
    )
    data_path: Path | None = Field(
        default=None,
        description="CSV/CSV.gz with the data; unset means the example's own source (housing: a download).",
    )
    features: list[str] = Field(
        default_factory=list,
        description="Feature columns, in model order (JSON list in the env var); default: the example's.",
    )
    target: str = Field(default="", description="Target column; default: the example's.")
    tracking_uri: str = Field(
        default_factory=default_tracking_uri,
        validation_alias="MLFLOW_TRACKING_URI",
        description="MLflow tracking URI (MLflow's own env var); defaults to the embedded SQLite store.",
    )
    artifact_root: Path = Field(
        default=PROJECT_ROOT / ".mlflow" / "artifacts",
        description="Artifact folder for experiments created in the embedded store.",
    )
    experiment: str = Field(
        default="", description="MLflow experiment holding every candidate run; default: the example's."
    )
    model_name: str = Field(default="", description="Registered model name; default: the example's.")
    params_file: Path = Field(
        default=Path(),
        description="YAML file with the split, candidates and their hyperparameters, and the promotion gate; "
        "default: the example's params.yaml.",
    )
    candidates: list[str] | None = Field(
        default=None, description="Train only these candidates (names from the params file)."
    )
    metrics_dir: Path | None = Field(
        default=None, description="Write metrics.json and candidates.json here (used by the DVC pipeline)."
    )
    mlflow_retries: int = Field(default=4, ge=0, description="Retries of an unreachable MLflow server.")
    mlflow_backoff_factor: int = Field(
        default=1, ge=0, description="Retry delay factor (seconds, doubling with every retry)."
    )
    log_format: str = Field(default="console", pattern="^(console|json)$", description="console or json.")

    @cached_property
    def resolved_example(self) -> Example:
        """The example folder these settings train (read once)."""
        return load_example(self.example)

    @model_validator(mode="after")
    def _fill_from_example(self) -> Self:
        given = self.model_fields_set
        spec = self.resolved_example.spec
        defaults = {
            "features": spec.feature_names,
            "target": spec.target,
            "experiment": spec.experiment,
            "model_name": spec.model_name,
            "params_file": self.resolved_example.params_file,
        }
        for name, value in defaults.items():
            if name not in given:
                object.__setattr__(self, name, value)
        return self
