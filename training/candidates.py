"""The scikit-learn pipeline of each candidate an example's ``params.yaml`` names."""

from __future__ import annotations

import importlib
from typing import Any

from contracts.errors import ConfigError
from contracts.params import CandidateParams


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
