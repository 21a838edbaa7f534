"""The served model: loaded once from the BentoML model store with the artifacts that travel with it."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, TypeVar

import numpy as np
import numpy.typing as npt

from contracts.artifacts import (
    CONTRACT_FILE,
    FEATURE_STATS_FILE,
    GOLDEN_SET_FILE,
    FeatureStatistics,
    GoldenSet,
)
from contracts.model import ModelContract
from contracts.modelio import ModelLoadError, load_sklearn_model
from service.compiled import CompiledPredictor, Steps, compile_model, run_steps
from service.tasks import Outputs, ServedTask, served_task

Artifact = TypeVar("Artifact")
# Up to this many rows the joined trees beat scikit-learn and are short enough to run on the event loop
# in one call (620 trees: 0.1 ms vs 8.6 ms for one row, 2.5 ms vs 7.4 ms for 32); larger batches are
# walked tree by tree on the loop, in steps (``LoadedModel.stepwise``).
COMPILED_MAX_ROWS = 32
# Synthetic rows, besides the golden set, on which the compiled predictor must equal scikit-learn.
CHECK_ROWS = 512


class Estimator(Protocol):
    def predict(self, X: Any) -> Any: ...  # noqa: N803 - scikit-learn's argument name


@dataclass(frozen=True)
class ModelInfo:
    """Registry facts about the model, recorded in the BentoML model's metadata by ``tabula build``."""

    name: str
    version: str
    run_id: str
    alias: str | None
    metrics: dict[str, float]
    data_digest: str | None
    bento_model_tag: str

    @classmethod
    def from_metadata(cls, metadata: dict[str, Any], bento_model_tag: str) -> ModelInfo:
        return cls(
            name=str(metadata["registered_name"]),
            version=str(metadata["registered_version"]),
            run_id=str(metadata["run_id"]),
            alias=metadata.get("alias"),
            metrics={k: float(v) for k, v in dict(metadata.get("metrics", {})).items()},
            data_digest=metadata.get("data_digest"),
            bento_model_tag=bento_model_tag,
        )


Predictor = Callable[[npt.NDArray[np.float64]], Outputs]


@dataclass
class LoadedModel:
    """Estimator plus its contract, feature statistics and golden set.

    Predicts float64 rows in ``feature_names`` order: a value per row (regression) or one probability
    per class and row, in the contract's label order (classification).
    """

    info: ModelInfo
    estimator: Estimator
    contract: ModelContract
    task: ServedTask
    stats: FeatureStatistics
    golden: GoldenSet
    feature_names: list[str]
    sklearn: Predictor
    compiled: CompiledPredictor | None = None
    loaded_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def predictor(self) -> str:
        return "compiled-trees" if self.compiled is not None else "scikit-learn"

    @property
    def fast_rows(self) -> int:
        """Largest request answered by the compiled predictor (cheap enough to run on the event loop)."""
        return COMPILED_MAX_ROWS if self.compiled is not None else 0

    @property
    def stepwise(self) -> Callable[[npt.NDArray[np.float64]], Steps] | None:
        """The compiled predictor's tree-by-tree walk, for batches walked on the event loop in steps."""
        return self.compiled.in_steps if self.compiled is not None else None

    def predict(self, rows: npt.NDArray[np.float64]) -> Outputs:
        """The outputs the service serves for ``rows``, computed the way it serves them, in one call."""
        if self.compiled is None:
            return self.sklearn(rows)
        if rows.shape[0] <= COMPILED_MAX_ROWS:
            return self.compiled(rows)
        return run_steps(self.compiled.in_steps(rows))

    def golden_error(self) -> float:
        """Largest absolute difference between the golden outputs and this process's (a wrong label: inf)."""
        order = [self.golden.feature_names.index(name) for name in self.feature_names]
        rows = np.asarray(self.golden.rows, dtype=np.float64)[:, order]
        return self.task.golden_error(self.predict(rows), self.golden)

    def feature_importances(self) -> dict[str, float] | None:
        final = _final_step(self.estimator)
        importances = getattr(final, "feature_importances_", None)
        if importances is None:
            coefficients = getattr(final, "coef_", None)
            if coefficients is None:
                return None
            importances = np.abs(np.asarray(coefficients, dtype=np.float64).reshape(-1))
        values = np.asarray(importances, dtype=np.float64).reshape(-1)
        if values.shape[0] != len(self.feature_names):
            return None
        return {name: float(v) for name, v in zip(self.feature_names, values, strict=True)}


def load_model_dir(path: Path, info: ModelInfo) -> LoadedModel:
    """Load a model directory as written by ``service.packaging`` (skops file + artifacts).

    The contract says what the API serves; the model, the statistics and the golden set must agree
    with it. Raises :class:`ModelLoadError` with a one-line message naming the file at fault.
    """
    contract = read_contract(path)
    # The project's skops allow-list, not the model's own record of it: a crafted model could trust anything.
    estimator: Estimator = load_sklearn_model(path)
    stats = _read_artifact(FeatureStatistics.read, path / FEATURE_STATS_FILE)
    golden = _read_artifact(GoldenSet.read, path / GOLDEN_SET_FILE)
    names = getattr(estimator, "feature_names_in_", None)
    feature_names = [str(n) for n in names] if names is not None else contract.feature_names
    served = contract.feature_names
    if sorted(feature_names) != sorted(served):
        raise ModelLoadError(f"{path} expects features {feature_names}, its contract serves {served}")
    missing = sorted(set(served) - set(stats.feature_names))
    if missing:
        raise ModelLoadError(f"{path / FEATURE_STATS_FILE} has no statistics of {missing}")
    if golden.is_classification != (contract.task == "classification"):
        raise ModelLoadError(f"{path / GOLDEN_SET_FILE} does not fit a {contract.task} model")
    task = served_task(contract)
    try:
        sklearn = task.sklearn_predictor(estimator)
    except (AttributeError, ValueError) as error:
        raise ModelLoadError(f"{path} cannot serve its {contract.task} contract: {error}") from error
    _single_job(estimator)
    model = LoadedModel(
        info=info,
        estimator=estimator,
        contract=contract,
        task=task,
        stats=stats,
        golden=golden,
        feature_names=feature_names,
        sklearn=sklearn,
    )
    model.compiled = compile_model(estimator, _check_rows(model), contract.task)
    return model


def read_contract(path: Path) -> ModelContract:
    """The model contract of a model directory (``contract.json``)."""
    return _read_artifact(ModelContract.read, path / CONTRACT_FILE)


def _read_artifact(read: Callable[[Path], Artifact], path: Path) -> Artifact:
    try:
        return read(path)
    except Exception as exc:
        raise ModelLoadError(f"cannot load {path}: {exc.__class__.__name__}: {exc}") from exc


def _check_rows(model: LoadedModel) -> npt.NDArray[np.float64]:
    """Golden rows plus rows spread over the training range, in the model's column order."""
    order = [model.golden.feature_names.index(name) for name in model.feature_names]
    golden = np.asarray(model.golden.rows, dtype=np.float64)[:, order]
    by_name = model.stats.by_name()
    low = np.array([by_name[name].min for name in model.feature_names])
    high = np.array([by_name[name].max for name in model.feature_names])
    spread = np.random.default_rng(0).uniform(low, high, size=(CHECK_ROWS, len(model.feature_names)))
    return np.concatenate((golden, spread))


def prediction_executor(threads: int) -> ThreadPoolExecutor:
    """The one thread that runs predictions, set up for many small calls."""
    return ThreadPoolExecutor(
        max_workers=1, thread_name_prefix="predict", initializer=_tune_predict_thread, initargs=(threads,)
    )


def _tune_predict_thread(threads: int) -> None:
    import sklearn
    from threadpoolctl import threadpool_limits

    # Small predictions take microseconds: OpenMP/BLAS thread teams only add start-up cost.
    # OpenMP limits are per calling thread, hence set here rather than at load.
    threadpool_limits(limits=threads)
    # Inputs are already validated as finite by the request schemas; skip sklearn's re-checks.
    sklearn.set_config(assume_finite=True, skip_parameter_validation=True)


def _single_job(estimator: Estimator) -> None:
    """joblib workers cost far more than one small prediction (RandomForest: ~10 ms per row)."""
    set_params = getattr(estimator, "set_params", None)
    get_params = getattr(estimator, "get_params", None)
    if set_params is not None and get_params is not None:
        n_jobs = {key: 1 for key in get_params(deep=True) if key == "n_jobs" or key.endswith("__n_jobs")}
        if n_jobs:
            set_params(**n_jobs)
    # Rows arrive as arrays in the fitted column order; the feature-name check would only warn.
    warnings.filterwarnings("ignore", message="X does not have valid feature names")


def _final_step(estimator: Estimator) -> Any:
    steps = getattr(estimator, "steps", None)
    return steps[-1][1] if steps else estimator
