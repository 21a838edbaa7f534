"""The MLflow Model Registry side: connection, registration, aliases and the promotion gate.

Invariant: ``production`` only ever moves to a version that passed the gate (or that an operator
forced), and it moves last, after every check and tag; any failure before leaves it where it was.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from contracts.modelio import ModelLoadError, load_sklearn_model
from contracts.params import PromotionParams
from training.config import TrainingSettings
from training.errors import RegistryError
from training.evaluate import Comparison, compare
from training.tasks import Metric

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

logger = logging.getLogger(__name__)

PRODUCTION = "production"
CHALLENGER = "challenger"
DECISION_TAG = "promotion.decision"
PREVIOUS_TAG = "promotion.previous_champion"
T = TypeVar("T")


def connect(settings: TrainingSettings) -> MlflowClient:
    """A client for the configured store; fails fast with one line when it cannot be reached."""
    # MLflow retries HTTP calls itself; bound its retries so an outage fails in seconds, not minutes.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", str(settings.mlflow_retries))
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", str(settings.mlflow_backoff_factor))
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
    # Our own output says where runs went; MLflow's per-run links would corrupt `--json` on stdout.
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    import mlflow

    if settings.tracking_uri.startswith("sqlite:///"):
        Path(settings.tracking_uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(settings.tracking_uri)
    client = mlflow.MlflowClient(settings.tracking_uri)
    call(lambda: client.search_experiments(max_results=1), f"reach MLflow at {settings.tracking_uri}")
    return client


def call(action: Callable[[], T], what: str) -> T:
    """Run one registry call, turning any transport or server failure into a :class:`RegistryError`."""
    from mlflow.exceptions import MlflowException

    try:
        return action()
    except (MlflowException, OSError) as exc:
        message = str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
        raise RegistryError(f"could not {what}: {message[:300]}") from exc


def ensure_experiment(client: MlflowClient, settings: TrainingSettings) -> str:
    experiment = call(lambda: client.get_experiment_by_name(settings.experiment), "look up the experiment")
    if experiment is not None:
        return str(experiment.experiment_id)
    location = None
    if settings.tracking_uri.startswith("sqlite:///"):
        settings.artifact_root.mkdir(parents=True, exist_ok=True)
        location = settings.artifact_root.as_uri()
    return str(
        call(
            lambda: client.create_experiment(settings.experiment, artifact_location=location),
            "create the experiment",
        )
    )


def alias_version(client: MlflowClient, name: str, alias: str) -> ModelVersion | None:
    """The version an alias points at, or None when the alias (or the model) does not exist."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException as exc:
        if exc.error_code in {"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"}:
            return None
        raise RegistryError(f"could not read alias {alias!r} of {name!r}: {exc}") from exc


def get_version(client: MlflowClient, name: str, version: str) -> ModelVersion:
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version(name, version)
    except MlflowException as exc:
        raise RegistryError(f"model {name!r} has no version {version}") from exc


def register(
    client: MlflowClient, name: str, model_uri: str, model_id: str, run_id: str, fingerprint: str
) -> tuple[str, bool]:
    """Register a run's model; an identical earlier run (same fingerprint) reuses its version.

    Returns the version and whether it was newly created.
    """
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(name)
    except MlflowException:
        call(lambda: client.create_registered_model(name), f"create registered model {name!r}")
    existing = call(
        lambda: client.search_model_versions(f"name = '{name}' and tag.fingerprint = '{fingerprint}'"),
        "search model versions",
    )
    if existing:
        version = max(existing, key=lambda candidate: int(candidate.version))
        return str(version.version), False
    created = call(
        lambda: client.create_model_version(
            name, source=model_uri, run_id=run_id, tags={"fingerprint": fingerprint}, model_id=model_id
        ),
        "register the model version",
    )
    return str(created.version), True


def load_version_model(client: MlflowClient, name: str, version: str) -> Any:
    """Download a registered version and load its estimator with our own allow-list."""
    import mlflow

    with tempfile.TemporaryDirectory(prefix="tabula-model-") as scratch:
        path = call(
            lambda: mlflow.artifacts.download_artifacts(
                artifact_uri=f"models:/{name}/{version}", dst_path=scratch
            ),
            f"download version {version} of {name!r}",
        )
        try:
            return load_sklearn_model(Path(path))
        except ModelLoadError as exc:
            raise RegistryError(f"version {version} of {name!r}: {exc}") from exc


@dataclass(frozen=True)
class Decision:
    """What the gate decided for a challenger, with the numbers it decided on."""

    version: str
    outcome: str  # first | promoted | rejected | forced | unchanged
    reason: str
    champion: str | None = None
    comparison: Comparison | None = None
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def promoted(self) -> bool:
        return self.outcome in {"first", "promoted", "forced"}

    def tags(self) -> dict[str, str]:
        """``promotion.*`` tags: decision, reason, champion, and the comparison's metric and numbers."""
        tags = {DECISION_TAG: self.outcome, "promotion.reason": self.reason}
        if self.champion is not None:
            tags["promotion.champion"] = self.champion
        if self.comparison is not None:
            for key, value in asdict(self.comparison).items():
                if isinstance(value, bool):
                    tags[f"promotion.{key}"] = str(value).lower()
                elif isinstance(value, float):
                    tags[f"promotion.{key}"] = f"{value:.6f}"
                else:
                    tags[f"promotion.{key}"] = str(value)
        return tags | self.extra


def gate(
    version: str,
    champion: str | None,
    y_true: np.ndarray,
    challenger_pred: np.ndarray,
    champion_pred: np.ndarray | None,
    promotion: PromotionParams,
    seed: int,
    *,
    metric: Metric,
) -> Decision:
    """Decide whether a challenger replaces the champion; pure, so it is tested without MLflow.

    ``y_true`` and the scores are in the form ``metric`` takes (see :mod:`training.tasks`).
    """
    if champion is None or champion_pred is None:
        return Decision(version, "first", "no champion yet: the first model is promoted")
    if champion == version:
        return Decision(version, "unchanged", "this version is already production", champion)
    comparison = compare(
        metric,
        y_true,
        challenger_pred,
        champion_pred,
        samples=promotion.bootstrap_samples,
        confidence=promotion.confidence,
        seed=seed,
    )
    interval = f"{comparison.confidence:.0%} CI [{comparison.ci_low:+.4f}, {comparison.ci_high:+.4f}]"
    bound = f"above +{promotion.margin:g}" if metric.higher_is_better else f"below -{promotion.margin:g}"
    numbers = (
        f"test {metric.label} {comparison.challenger_value:.4f} vs champion v{champion} "
        f"{comparison.champion_value:.4f}: difference {interval}"
    )
    if comparison.beats(promotion.margin):
        return Decision(version, "promoted", f"{numbers} lies {bound}", champion, comparison)
    return Decision(version, "rejected", f"{numbers} does not lie {bound}", champion, comparison)


def apply(client: MlflowClient, name: str, decision: Decision) -> None:
    """Record the decision on the version, then (and only then) move ``production``."""
    for key, value in decision.tags().items():
        call(partial(client.set_model_version_tag, name, decision.version, key, value), "tag the version")
    if not decision.promoted:
        return
    if decision.champion is not None:
        call(
            lambda: client.set_model_version_tag(
                name, decision.version, PREVIOUS_TAG, str(decision.champion)
            ),
            "record the previous champion",
        )
    call(lambda: client.set_registered_model_alias(name, PRODUCTION, decision.version), "move the alias")


def rollback(client: MlflowClient, name: str) -> tuple[str, str]:
    """Move ``production`` back to the champion it replaced; returns (from, to)."""
    current = alias_version(client, name, PRODUCTION)
    if current is None:
        raise RegistryError(f"{name!r} has no production version to roll back")
    previous = current.tags.get(PREVIOUS_TAG)
    if not previous:
        raise RegistryError(f"version {current.version} of {name!r} replaced no earlier champion")
    get_version(client, name, previous)
    call(
        lambda: client.set_model_version_tag(name, current.version, DECISION_TAG, "rolled_back"),
        "tag the rolled-back version",
    )
    call(lambda: client.set_registered_model_alias(name, PRODUCTION, previous), "move the alias")
    return str(current.version), previous


@dataclass(frozen=True)
class VersionRow:
    """One line of ``tabula models``."""

    version: str
    aliases: list[str]
    run_id: str
    candidate: str
    metrics: dict[str, float]
    decision: str
    created: int


def list_versions(client: MlflowClient, name: str) -> list[VersionRow]:
    from mlflow.exceptions import MlflowException

    try:
        model = client.get_registered_model(name)
    except MlflowException as exc:
        raise RegistryError(f"no registered model named {name!r} (train first)") from exc
    aliases_by_version: dict[str, list[str]] = {}
    for alias, version in (model.aliases or {}).items():
        aliases_by_version.setdefault(str(version), []).append(alias)
    rows = []
    for version in call(lambda: client.search_model_versions(f"name = '{name}'"), "list versions"):
        run = call(partial(client.get_run, version.run_id), "read the run") if version.run_id else None
        metrics = run.data.metrics if run else {}
        rows.append(
            VersionRow(
                version=str(version.version),
                aliases=sorted(aliases_by_version.get(str(version.version), [])),
                run_id=version.run_id or "",
                candidate=run.data.tags.get("candidate", "") if run else "",
                metrics={key: value for key, value in metrics.items() if key.startswith("test_")},
                decision=version.tags.get(DECISION_TAG, ""),
                created=int(version.creation_timestamp or 0),
            )
        )
    return sorted(rows, key=lambda row: int(row.version), reverse=True)
