"""An example's parameters file (``examples/<name>/params.yaml``): split, promotion gate and candidates.

Training builds the candidates' pipelines from it (:mod:`training.candidates`); the load test reads its split.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from contracts.errors import ConfigError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SplitParams(_Strict):
    test_size: float = Field(default=0.2, gt=0, lt=1, description="Share of rows in the frozen test split.")
    test_seed: int = Field(default=42, description="Seed of the test split; fixed so the test rows stay put.")
    validation_size: float = Field(default=0.1, gt=0, lt=1, description="Share of rows for model selection.")
    seed: int = Field(default=42, description="Seed of the validation split and of the estimators.")


class PromotionParams(_Strict):
    metric: str | None = Field(
        default=None,
        description="Test metric the gate bootstraps: rmse or mae (regression), log_loss or accuracy "
        "(classification); unset means rmse / log_loss.",
    )
    margin: float = Field(
        default=0.0, ge=0, description="Improvement (in the metric's units) the challenger must exceed."
    )
    bootstrap_samples: int = Field(default=1000, ge=100, description="Paired bootstrap resamples.")
    confidence: float = Field(default=0.95, gt=0.5, lt=1, description="Confidence of the interval.")


class CandidateParams(_Strict):
    estimator: str = Field(description="Dotted path of a scikit-learn regressor or classifier class.")
    scale: bool = Field(default=False, description="Standardise features first.")
    params: dict[str, Any] = Field(default_factory=dict, description="Estimator keyword arguments.")


class TrainingParams(_Strict):
    split: SplitParams = SplitParams()
    promotion: PromotionParams = PromotionParams()
    golden_set_rows: int = Field(default=16, ge=1, description="Test rows kept as the readiness golden set.")
    candidates: dict[str, CandidateParams] = Field(min_length=1)

    def select(self, names: list[str] | None) -> dict[str, CandidateParams]:
        """The candidates to train: all, or the named subset in the order given."""
        if not names:
            return dict(self.candidates)
        unknown = sorted(set(names) - set(self.candidates))
        if unknown:
            raise ConfigError(f"unknown candidates {unknown}; the params file has {sorted(self.candidates)}")
        return {name: self.candidates[name] for name in names}


def load_params(path: Path) -> TrainingParams:
    """Read and validate the params file."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"params file not found: {path}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"params file {path} is not valid YAML: {exc}") from exc
    try:
        return TrainingParams.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise ConfigError(f"params file {path}: {where}: {first['msg']}") from exc
