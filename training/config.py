"""Settings of the training component: everything a Job needs comes from ``HOUSING_*`` env vars."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent.parent

CALIFORNIA_FEATURES: tuple[str, ...] = (
    "MedInc",
    "HouseAge",
    "AveRooms",
    "AveBedrms",
    "Population",
    "AveOccup",
    "Latitude",
    "Longitude",
)


def default_tracking_uri() -> str:
    """The embedded store: SQLite backend inside the project folder, no server needed."""
    return f"sqlite:///{PROJECT_ROOT / '.mlflow' / 'mlflow.db'}"


class TrainingSettings(BaseSettings):
    """Configuration of ``housing data|train|promote|models`` (env prefix ``HOUSING_``)."""

    model_config = SettingsConfigDict(env_prefix="HOUSING_", extra="ignore", populate_by_name=True)

    data_path: Path | None = Field(
        default=None,
        description="CSV/CSV.gz with the data; unset means scikit-learn's fetch_california_housing().",
    )
    features: list[str] = Field(
        default=list(CALIFORNIA_FEATURES),
        description="Feature columns, in model order (JSON list in the env var).",
    )
    target: str = Field(default="MedHouseVal", description="Target column.")
    tracking_uri: str = Field(
        default_factory=default_tracking_uri,
        validation_alias="MLFLOW_TRACKING_URI",
        description="MLflow tracking URI (MLflow's own env var); defaults to the embedded SQLite store.",
    )
    artifact_root: Path = Field(
        default=PROJECT_ROOT / ".mlflow" / "artifacts",
        description="Artifact folder for experiments created in the embedded store.",
    )
    experiment: str = Field(default="housing", description="MLflow experiment holding every candidate run.")
    model_name: str = Field(default="housing-price", description="Registered model name.")
    params_file: Path = Field(
        default=PROJECT_ROOT / "params.yaml",
        description="YAML file with the split, candidates and their hyperparameters, and the promotion gate.",
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
