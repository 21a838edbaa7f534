"""``tabula train``: fit every candidate as an MLflow run, register the best, run the promotion gate."""

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

from contracts.artifacts import CONTRACT_FILE, FEATURE_STATS_FILE, GOLDEN_SET_FILE
from contracts.data import Dataset, Split, load_dataset, split_dataset
from contracts.model import ModelContract
from contracts.modelio import TRUSTED_TYPES
from contracts.params import CandidateParams, TrainingParams, load_params
from training import registry
from training.candidates import build_pipeline
from training.config import PROJECT_ROOT, TrainingSettings
from training.contract import derive_contract
from training.errors import RegistryError
from training.evaluate import model_bytes, single_row_latency
from training.stats import feature_statistics
from training.tasks import Metric, TaskKind, gate_metric, task_for

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
    validation: dict[str, float]
    test: dict[str, float]
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
    contract: ModelContract
    metric: Metric

    def summary(self) -> dict[str, Any]:
        """Machine-readable outcome (DVC metrics, ``--json``)."""
        return {
            "example": self.contract.example,
            "task": self.contract.task,
            "metric": self.metric.name,
            "data_digest": self.data_digest,
            "best": self.best.name,
            "version": self.version,
            "newly_registered": self.newly_registered,
            "decision": self.decision.outcome,
            "reason": self.decision.reason,
            **{f"test_{name}": value for name, value in self.best.test.items()},
            "candidates": {
                result.name: {
                    f"val_{self.metric.name}": result.validation[self.metric.name],
                    **{f"test_{name}": value for name, value in result.test.items()},
                    "fit_seconds": result.fit_seconds,
                    "predict_seconds_per_row": result.latency_seconds,
                    "model_bytes": result.size_bytes,
                }
                for result in self.candidates
            },
        }


def git_sha() -> str:
    """The commit the code came from: ``TABULA_GIT_SHA`` in images, else git, else ``unknown``."""
    import os

    if sha := os.environ.get("TABULA_GIT_SHA"):
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


@dataclass(frozen=True)
class Session:
    """What every candidate of one training session shares."""

    params: TrainingParams
    dataset: Dataset
    split: Split
    task: TaskKind
    experiment_id: str
    sha: str
    artifacts: list[Path]


def _train_candidate(name: str, candidate: CandidateParams, session: Session) -> CandidateResult:
    import mlflow
    from mlflow.models import infer_signature

    params, dataset, split, task = session.params, session.dataset, session.split, session.task
    run_fingerprint = fingerprint(dataset.digest, name, candidate, params, session.sha)
    pipeline = build_pipeline(candidate, params.split.seed, task.estimator_kind)
    tags = {
        "candidate": name,
        "git_sha": session.sha,
        "data_digest": dataset.digest,
        "fingerprint": run_fingerprint,
        "example": task.contract.example,
        "task": task.contract.task,
    }
    with mlflow.start_run(experiment_id=session.experiment_id, run_name=name, tags=tags) as run:
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
                name=task.contract.example,
                digest=dataset.digest,
            ),
            context="training",
        )
        start = time.perf_counter()
        pipeline.fit(split.x_train, split.y_train)
        fit_seconds = time.perf_counter() - start
        validation = task.quality(split.y_val, task.scores(pipeline, split.x_val))
        test = task.quality(split.y_test, task.scores(pipeline, split.x_test))
        latency = single_row_latency(partial(task.scores, pipeline), split.x_test)
        size = model_bytes(pipeline)
        mlflow.log_metrics(
            {f"val_{key}": value for key, value in validation.items()}
            | {f"test_{key}": value for key, value in test.items()}
            | {
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
        with tempfile.TemporaryDirectory(prefix="tabula-golden-") as scratch:
            sample = split.x_test.sample(
                n=min(params.golden_set_rows, len(split.x_test)), random_state=params.split.seed
            )
            golden = task.golden_set(pipeline, sample)
            mlflow.log_artifact(str(golden.write(Path(scratch) / GOLDEN_SET_FILE)))
        for path in session.artifacts:
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


def champion_scores(
    client: MlflowClient, name: str, version: str | None, split: Split, task: TaskKind
) -> np.ndarray | None:
    """The champion's scores on today's frozen test rows, so both models face identical rows."""
    if version is None:
        return None
    model = registry.load_version_model(client, name, version)
    try:
        return task.scores(model, split.x_test)
    except (ValueError, KeyError, AttributeError) as exc:
        raise RegistryError(
            f"champion v{version} cannot score the current test rows ({exc}); "
            "promote deliberately with `tabula promote --version N --force`"
        ) from exc


def decide(
    client: MlflowClient,
    settings: TrainingSettings,
    params: TrainingParams,
    split: Split,
    task: TaskKind,
    version: str,
    challenger_scores: np.ndarray,
) -> registry.Decision:
    """Run the gate for ``version`` against the current champion and record the outcome."""
    champion = registry.alias_version(client, settings.model_name, registry.PRODUCTION)
    champion_version = str(champion.version) if champion is not None else None
    decision = registry.gate(
        version,
        champion_version,
        task.targets(split.y_test),
        challenger_scores,
        champion_scores(client, settings.model_name, champion_version, split, task),
        params.promotion,
        params.split.seed,
        metric=gate_metric(task, params.promotion.metric),
    )
    if decision.outcome != "unchanged":
        registry.apply(client, settings.model_name, decision)
    return decision


def load_settings_dataset(settings: TrainingSettings) -> Dataset:
    """The data the settings name: their example's source, or ``data_path`` in its place."""
    return load_dataset(settings.data_path, settings.features, settings.target, settings.resolved_example)


def load_split(
    settings: TrainingSettings, params: TrainingParams, dataset: Dataset | None = None
) -> tuple[Dataset, Split, TaskKind]:
    """The configured data (unless already loaded), its seeded split, and the task of its contract."""
    if dataset is None:
        dataset = load_settings_dataset(settings)
    example = settings.resolved_example
    stratify = example.spec.task == "classification"
    split = split_dataset(dataset, **params.split.model_dump(), stratify=stratify)
    contract = derive_contract(example, settings.features, settings.target, split)
    return dataset, split, task_for(contract)


def train(
    settings: TrainingSettings,
    on_candidate: Callable[[CandidateResult], None] | None = None,
    dataset: Dataset | None = None,
) -> TrainingReport:
    """The whole training session; the registry changes only after every candidate is logged."""
    params = load_params(settings.params_file)
    selected = params.select(settings.candidates)
    dataset, split, task = load_split(settings, params, dataset)
    metric = gate_metric(task, params.promotion.metric)
    client = registry.connect(settings)
    experiment_id = registry.ensure_experiment(client, settings)
    results = []
    with tempfile.TemporaryDirectory(prefix="tabula-stats-") as scratch:
        stats_path = feature_statistics(split.x_train, settings.target).write(
            Path(scratch) / FEATURE_STATS_FILE
        )
        contract_path = task.contract.write(Path(scratch) / CONTRACT_FILE)
        session = Session(params, dataset, split, task, experiment_id, git_sha(), [stats_path, contract_path])
        for name, candidate in selected.items():
            logger.info("training candidate %s", name)
            result = registry.call(
                partial(_train_candidate, name, candidate, session), f"log candidate {name}"
            )
            results.append(result)
            if on_candidate is not None:
                on_candidate(result)
    best = select_best(results, metric)
    version, created = registry.register(
        client, settings.model_name, best.model_uri, best.model_id, best.run_id, best.fingerprint
    )
    registry.call(
        lambda: client.set_registered_model_alias(settings.model_name, registry.CHALLENGER, version),
        "set the challenger alias",
    )
    decision = decide(client, settings, params, split, task, version, task.scores(best.model, split.x_test))
    return TrainingReport(results, best, version, created, decision, dataset.digest, task.contract, metric)


def select_best(results: list[CandidateResult], metric: Metric) -> CandidateResult:
    """The candidate best on the validation rows by the gate's metric (the first of equals)."""
    best = results[0]
    for result in results[1:]:
        if metric.better(result.validation[metric.name], best.validation[metric.name]):
            best = result
    return best


def promote_version(settings: TrainingSettings, version: str, *, force: bool) -> registry.Decision:
    """``tabula promote --version N``: the same gate as training, or an operator's override."""
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
    _, split, task = load_split(settings, params)
    model = registry.load_version_model(client, settings.model_name, version)
    try:
        scores = task.scores(model, split.x_test)
    except (ValueError, KeyError, AttributeError) as exc:
        raise RegistryError(f"version {version} cannot score the current test rows ({exc})") from exc
    return decide(client, settings, params, split, task, version, scores)
