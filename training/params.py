"""An example's parameters file (``examples/<name>/params.yaml``) and the candidate pipelines it describes."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from training.errors import ConfigError


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


def build_pipeline(candidate: CandidateParams, seed: int, kind: str = "regressor") -> Any:
    """A scikit-learn Pipeline for one candidate: a scikit-learn class of the task's ``kind``.

    ``kind`` is ``regressor`` or ``classifier``; a classifier must give probabilities (the gate scores them).
    """
    from sklearn.base import ClassifierMixin, RegressorMixin
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    module_name, _, class_name = candidate.estimator.rpartition(".")
    if not module_name.startswith("sklearn."):
        raise ConfigError(f"estimator {candidate.estimator!r} is not a scikit-learn class")
    try:
        estimator_class = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"estimator {candidate.estimator!r} does not exist") from exc
    mixin = ClassifierMixin if kind == "classifier" else RegressorMixin
    if not (isinstance(estimator_class, type) and issubclass(estimator_class, mixin)):
        raise ConfigError(f"estimator {candidate.estimator!r} is not a {kind}")
    try:
        estimator = estimator_class(**candidate.params)
    except TypeError as exc:
        raise ConfigError(f"estimator {candidate.estimator!r}: {exc}") from exc
    if kind == "classifier" and not hasattr(estimator, "predict_proba"):
        raise ConfigError(f"estimator {candidate.estimator!r} gives no class probabilities (predict_proba)")
    if "random_state" in estimator.get_params() and "random_state" not in candidate.params:
        estimator.set_params(random_state=seed)
    steps: list[tuple[str, Any]] = [("scale", StandardScaler())] if candidate.scale else []
    steps.append(("model", estimator))
    return Pipeline(steps)
