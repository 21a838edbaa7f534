"""``housing train``: fit every candidate as an MLflow run, register the best, run the promotion gate."""

from __future__ import annotations

import hashlib
import json
import logging
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from training import registry
from training.config import PROJECT_ROOT, TrainingSettings
from training.data import Dataset, Split, load_dataset, split_dataset
from training.errors import RegistryError
from training.evaluate import Quality, model_bytes, quality, single_row_latency
from training.modelio import TRUSTED_TYPES
from training.params import CandidateParams, TrainingParams, build_pipeline, load_params
from training.stats import feature_statistics, golden_set

if TYPE_CHECKING:
    from mlflow import MlflowClient

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CandidateResult:
    name: str
    run_id: str
    model_uri: str
    model_id: str
    fingerprint: str
    model: Any
    validation: Quality
    test: Quality
    fit_seconds: float
    latency_seconds: float
    size_bytes: int


@dataclass(frozen=True)
class TrainingReport:
    candidates: list[CandidateResult]
    best: CandidateResult
    version: str
    newly_registered: bool
    decision: registry.Decision
    data_digest: str

    def summary(self) -> dict[str, Any]:
        """Machine-readable outcome (DVC metrics, ``--json``)."""
        return {
            "data_digest": self.data_digest,
            "best": self.best.name,
            "version": self.version,
            "newly_registered": self.newly_registered,
            "decision": self.decision.outcome,
            "reason": self.decision.reason,
            "test_rmse": self.best.test.rmse,
            "test_mae": self.best.test.mae,
            "test_r2": self.best.test.r2,
            "candidates": {
                result.name: {
                    "val_rmse": result.validation.rmse,
                    "test_rmse": result.test.rmse,
                    "test_mae": result.test.mae,
                    "test_r2": result.test.r2,
                    "fit_seconds": result.fit_seconds,
                    "predict_seconds_per_row": result.latency_seconds,
                    "model_bytes": result.size_bytes,
                }
                for result in self.candidates
            },
        }


def git_sha() -> str:
    """The commit the code came from: ``HOUSING_GIT_SHA`` in images, else git, else ``unknown``."""
    import os

    if sha := os.environ.get("HOUSING_GIT_SHA"):
        return sha
    try:
        completed = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"],  # noqa: S607 - git from PATH is the point
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return completed.stdout.strip() or "unknown"


def fingerprint(
    data_digest: str, name: str, candidate: CandidateParams, params: TrainingParams, sha: str
) -> str:
    """Identity of a run: identical data, parameters and code make an identical model."""
    payload = json.dumps(
        {
            "data": data_digest,
            "name": name,
            "candidate": candidate.model_dump(),
            "split": params.split.model_dump(),
            "code": sha,
        },
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _pip_requirements() -> list[str]:
    """Pinned requirements of the logged model; given explicitly because inferring them is slow."""
    from importlib.metadata import version

    return [f"{package}=={version(package)}" for package in ("scikit-learn", "skops", "numpy", "pandas")]


def _train_candidate(
    name: str,
    candidate: CandidateParams,
    params: TrainingParams,
    dataset: Dataset,
    split: Split,
    experiment_id: str,
    sha: str,
    artifacts: list[Path],
) -> CandidateResult:
    import mlflow
    from mlflow.models import infer_signature

    run_fingerprint = fingerprint(dataset.digest, name, candidate, params, sha)
    pipeline = build_pipeline(candidate, params.split.seed)
    tags = {"candidate": name, "git_sha": sha, "data_digest": dataset.digest, "fingerprint": run_fingerprint}
    with mlflow.start_run(experiment_id=experiment_id, run_name=name, tags=tags) as run:
        mlflow.log_params(
            {"estimator": candidate.estimator, "scale": candidate.scale}
            | {f"model.{key}": value for key, value in candidate.params.items()}
            | {f"split.{key}": value for key, value in params.split.model_dump().items()}
        )
        mlflow.log_input(
            mlflow.data.from_pandas(  # type: ignore[attr-defined]
                dataset.frame,
                source=None if dataset.source.startswith("sklearn") else dataset.source,
                targets=str(dataset.target.name),
                name="california-housing",
                digest=dataset.digest,
            ),
            context="training",
        )
        start = time.perf_counter()
        pipeline.fit(split.x_train, split.y_train)
        fit_seconds = time.perf_counter() - start
        validation = quality(split.y_val, pipeline.predict(split.x_val))
        test_pred = pipeline.predict(split.x_test)
        test = quality(split.y_test, test_pred)
        latency = single_row_latency(pipeline, split.x_test)
        size = model_bytes(pipeline)
        mlflow.log_metrics(
            {
                "val_rmse": validation.rmse,
                "val_mae": validation.mae,
                "val_r2": validation.r2,
                "test_rmse": test.rmse,
                "test_mae": test.mae,
                "test_r2": test.r2,
                "fit_seconds": fit_seconds,
                "predict_seconds_per_row": latency,
                "model_bytes": size,
            }
        )
        example = split.x_train.head(5)
        info = mlflow.sklearn.log_model(
            pipeline,
            name="model",
            serialization_format="skops",
            skops_trusted_types=TRUSTED_TYPES,
            signature=infer_signature(example, pipeline.predict(example)),
            input_example=example,
            pip_requirements=_pip_requirements(),
        )
        with tempfile.TemporaryDirectory(prefix="housing-golden-") as scratch:
            golden = golden_set(pipeline, split.x_test, params.golden_set_rows, params.split.seed)
            mlflow.log_artifact(str(golden.write(Path(scratch) / "golden_set.json")))
        for path in artifacts:
            mlflow.log_artifact(str(path))
    return CandidateResult(
        name=name,
        run_id=run.info.run_id,
        model_uri=info.model_uri,
        model_id=info.model_id,
        fingerprint=run_fingerprint,
        model=pipeline,
        validation=validation,
        test=test,
        fit_seconds=fit_seconds,
        latency_seconds=latency,
        size_bytes=size,
    )


def champion_predictions(
    client: MlflowClient, name: str, version: str | None, split: Split
) -> np.ndarray | None:
    """The champion's predictions on today's frozen test rows, so both models face identical rows."""
    if version is None:
        return None
    model = registry.load_version_model(client, name, version)
    try:
        return np.asarray(model.predict(split.x_test), dtype="float64")
    except (ValueError, KeyError) as exc:
        raise RegistryError(
            f"champion v{version} cannot score the current test rows ({exc}); "
            "promote deliberately with `housing promote --version N --force`"
        ) from exc


def decide(
    client: MlflowClient,
    settings: TrainingSettings,
    params: TrainingParams,
    split: Split,
    version: str,
    challenger_pred: np.ndarray,
) -> registry.Decision:
    """Run the gate for ``version`` against the current champion and record the outcome."""
    champion = registry.alias_version(client, settings.model_name, registry.PRODUCTION)
    champion_version = str(champion.version) if champion is not None else None
    decision = registry.gate(
        version,
        champion_version,
        split.y_test.to_numpy(),
        challenger_pred,
        champion_predictions(client, settings.model_name, champion_version, split),
        params.promotion,
        params.split.seed,
    )
    if decision.outcome != "unchanged":
        registry.apply(client, settings.model_name, decision)
    return decision


def load_split(
    settings: TrainingSettings, params: TrainingParams, dataset: Dataset | None = None
) -> tuple[Dataset, Split]:
    """The configured data (unless already loaded) and its seeded split."""
    if dataset is None:
        dataset = load_dataset(settings.data_path, settings.features, settings.target)
    return dataset, split_dataset(dataset, **params.split.model_dump())


def train(
    settings: TrainingSettings,
    on_candidate: Callable[[CandidateResult], None] | None = None,
    dataset: Dataset | None = None,
) -> TrainingReport:
    """The whole training session; the registry changes only after every candidate is logged."""
    params = load_params(settings.params_file)
    selected = params.select(settings.candidates)
    dataset, split = load_split(settings, params, dataset)
    client = registry.connect(settings)
    experiment_id = registry.ensure_experiment(client, settings)
    sha = git_sha()
    results = []
    with tempfile.TemporaryDirectory(prefix="housing-stats-") as scratch:
        stats_path = feature_statistics(split.x_train, settings.target).write(
            Path(scratch) / "feature_stats.json"
        )
        for name, candidate in selected.items():
            logger.info("training candidate %s", name)
            result = registry.call(
                partial(
                    _train_candidate,
                    name,
                    candidate,
                    params,
                    dataset,
                    split,
                    experiment_id,
                    sha,
                    [stats_path],
                ),
                f"log candidate {name}",
            )
            results.append(result)
            if on_candidate is not None:
                on_candidate(result)
    best = min(results, key=lambda result: result.validation.rmse)
    version, created = registry.register(
        client, settings.model_name, best.model_uri, best.model_id, best.run_id, best.fingerprint
    )
    registry.call(
        lambda: client.set_registered_model_alias(settings.model_name, registry.CHALLENGER, version),
        "set the challenger alias",
    )
    decision = decide(client, settings, params, split, version, best.model.predict(split.x_test))
    return TrainingReport(results, best, version, created, decision, dataset.digest)


def promote_version(settings: TrainingSettings, version: str, *, force: bool) -> registry.Decision:
    """``housing promote --version N``: the same gate as training, or an operator's override."""
    params = load_params(settings.params_file)
    client = registry.connect(settings)
    registry.get_version(client, settings.model_name, version)
    if force:
        champion = registry.alias_version(client, settings.model_name, registry.PRODUCTION)
        champion_version = str(champion.version) if champion is not None else None
        if champion_version == version:
            return registry.Decision(version, "unchanged", "this version is already production", version)
        decision = registry.Decision(
            version, "forced", "promoted by an operator without the gate (--force)", champion_version
        )
        registry.apply(client, settings.model_name, decision)
        return decision
    _, split = load_split(settings, params)
    model = registry.load_version_model(client, settings.model_name, version)
    return decide(client, settings, params, split, version, np.asarray(model.predict(split.x_test)))
