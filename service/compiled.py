"""A faster predictor for small requests, exact to scikit-learn's own.

scikit-learn's per-call overhead dominates single rows: a HistGradientBoosting model walks its
trees one Python call at a time (about 8 ms for 600 trees). Here ONE call of scikit-learn's own
Cython walker visits every tree: the trees are joined into one node array behind a routing tree
that splits on an extra column holding a tree index, and each input row is repeated once per
tree, so repeat ``i`` lands on the root of tree ``i``. Every tree thus makes scikit-learn's exact
comparisons, and the leaf values are summed in scikit-learn's order (baseline first, then tree by
tree): results are bit-identical. A leading StandardScaler is applied as plain arithmetic.

Larger batches are walked tree by tree instead (the routing tree and the repeated rows would cost three
times the CPU), in steps of about a millisecond, so that the event loop can run between them. That is why
they are not walked on a separate thread: scikit-learn's walker releases the GIL in each tree's walk and
must take it back after each, and next to a busy event loop each of those 620 waits lasts up to Python's
switch interval.

The walker is private to scikit-learn, so :func:`compile_model` checks the results on sample rows
and returns ``None`` for anything it does not cover or cannot build (the service then uses
scikit-learn).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Generator
from typing import Any

import numpy as np
import numpy.typing as npt

from contracts.model import Task
from service.logs import LOGGER_NAME

Rows = npt.NDArray[np.float64]
Transform = Callable[[Rows], Rows]
Steps = Generator[None, None, Rows]


# The final estimators the compiled predictor covers (any leading StandardScaler or transform steps allowed).
COVERED = ("HistGradientBoostingRegressor", "HistGradientBoostingClassifier")
# Tree walks (one row through one tree) per step of a stepwise prediction: about 1.3 ms on the project's
# VM, 65 trees of a 1,000-row batch. The loop's other work waits at most that long.
WALKS_PER_STEP = 65_536


class CompiledTrees:
    """All trees of a fitted HistGradientBoosting regressor or classifier, walked in one call per request."""

    def __init__(self, estimator: Any) -> None:
        from sklearn.ensemble._hist_gradient_boosting._predictor import _predict_from_raw_data

        self._walk = _predict_from_raw_data
        # Iteration-major, as scikit-learn adds them: tree ``i * per_iteration + k`` adds to output k.
        predictors = [predictor for iteration in estimator._predictors for predictor in iteration]
        self.per_iteration = int(estimator.n_trees_per_iteration_)
        self.n_trees = len(predictors)
        self.n_features = int(estimator.n_features_in_)
        sizes = [predictor.nodes.shape[0] for predictor in predictors]
        # The routing tree comes first (the walk starts at node 0), then the trees one after another.
        roots = self.n_trees - 1 + np.concatenate(([0], np.cumsum(sizes)[:-1])).astype(np.int64)
        trees = []
        for predictor, root in zip(predictors, roots, strict=True):
            nodes = predictor.nodes.copy()
            inner = nodes["is_leaf"] == 0
            shift = nodes["left"].dtype.type(root)
            nodes["left"][inner] += shift
            nodes["right"][inner] += shift
            trees.append(nodes)
        router = routing_tree(roots, self.n_features, predictors[0].nodes.dtype)
        self.nodes = np.concatenate([router, *trees])
        self.tree_nodes = [predictor.nodes for predictor in predictors]
        self.tree_index = np.arange(self.n_trees, dtype=np.float64)
        self.no_bitsets = np.zeros((0, 8), dtype=np.uint32)
        self.feature_map = np.zeros(self.n_features + 1, dtype=np.uint32)
        self.baseline = np.asarray(estimator._baseline_prediction, dtype=np.float64).reshape(-1)
        self.outputs: Callable[[Rows], Rows] = (
            estimator._loss.predict_proba
            if type(estimator).__name__ == "HistGradientBoostingClassifier"
            else lambda raw: estimator._loss.link.inverse(raw.reshape(-1))
        )

    def predict_in_steps(self, rows: Rows) -> Steps:
        """The outputs of ``rows``, tree by tree as scikit-learn sums them; yields between steps."""
        rows = np.ascontiguousarray(rows, dtype=np.float64)
        n_rows = rows.shape[0]
        raw = np.empty((self.per_iteration, n_rows))
        raw[:] = self.baseline[:, None]
        leaves = np.empty(n_rows)
        trees_per_step = max(1, WALKS_PER_STEP // max(n_rows, 1))
        for first in range(0, self.n_trees, trees_per_step):
            for tree in range(first, min(first + trees_per_step, self.n_trees)):
                self._walk(
                    self.tree_nodes[tree], rows, self.no_bitsets, self.no_bitsets, self.feature_map, 1, leaves
                )
                raw[tree % self.per_iteration] += leaves
            yield
        return self.outputs(np.ascontiguousarray(raw.T))

    def predict(self, rows: Rows) -> Rows:
        n_rows, width = rows.shape[0], self.n_features + 1
        # Tree-major: consecutive walks share a tree, whose nodes stay in the CPU cache.
        expanded = np.empty((self.n_trees, n_rows, width))
        expanded[:, :, :-1] = rows[None, :, :]
        expanded[:, :, -1] = self.tree_index[:, None]
        leaves = np.empty(self.n_trees * n_rows)
        # One thread: a request's few rows do not pay for OpenMP's start-up.
        self._walk(
            self.nodes,
            expanded.reshape(-1, width),
            self.no_bitsets,
            self.no_bitsets,
            self.feature_map,
            1,
            leaves,
        )
        # Per row and output, term 0 is the baseline; a running sum adds trees in scikit-learn's order.
        per_tree = leaves.reshape(self.n_trees // self.per_iteration, self.per_iteration, n_rows)
        terms = np.empty((n_rows, self.per_iteration, per_tree.shape[0] + 1))
        terms[:, :, 0] = self.baseline
        terms[:, :, 1:] = per_tree.transpose(2, 1, 0)
        return self.outputs(np.cumsum(terms, axis=2)[:, :, -1])


def routing_tree(roots: npt.NDArray[np.int64], column: int, dtype: np.dtype[Any]) -> npt.NDArray[Any]:
    """Split nodes on ``column`` (a tree index) that lead index ``i`` to node ``roots[i]``; top is node 0."""
    router = np.zeros(max(roots.shape[0] - 1, 0), dtype=dtype)
    made = 0

    def split(first: int, end: int) -> int:
        nonlocal made
        if end - first == 1:
            return int(roots[first])
        index, made = made, made + 1
        middle = (first + end) // 2
        router["feature_idx"][index] = column
        router["num_threshold"][index] = middle - 0.5
        router["left"][index] = split(first, middle)
        router["right"][index] = split(middle, end)
        return index

    split(0, roots.shape[0])
    return router


class CompiledPredictor:
    """A model's transforms and compiled trees: a call for a few rows, steps for a batch."""

    def __init__(self, transforms: list[Transform], trees: CompiledTrees) -> None:
        self._transforms = transforms
        self._trees = trees

    def __call__(self, rows: Rows) -> Rows:
        return self._trees.predict(self._transformed(rows))

    def in_steps(self, rows: Rows) -> Steps:
        """The same outputs tree by tree, yielding about every millisecond (see ``WALKS_PER_STEP``)."""
        return (yield from self._trees.predict_in_steps(self._transformed(rows)))

    def _transformed(self, rows: Rows) -> Rows:
        for transform in self._transforms:
            rows = transform(rows)
        return rows


def compile_model(estimator: Any, check_rows: Rows, task: Task = "regression") -> CompiledPredictor | None:
    """A predictor equal to scikit-learn's on ``check_rows``, both ways, or ``None`` if none can be built.

    It computes what the service serves: ``predict`` for a regression, ``predict_proba`` for a
    classification. The walker and the tree arrays are scikit-learn's private parts: if a new release
    changes them, building or checking the predictor fails. The service then predicts with
    scikit-learn, which is slower but right, and one line of the service log names the cause (a
    warning for a failure, info for a model this module does not cover).
    """
    try:
        return _compile(estimator, check_rows, task)
    except Exception as error:  # noqa: BLE001 - any failure here leaves scikit-learn's own predict
        _log_fallback(f"{type(error).__name__}: {error}")
        return None


def run_steps(steps: Steps) -> Rows:
    """The result of a stepwise prediction, its steps taken one after another."""
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]


def _compile(estimator: Any, check_rows: Rows, task: Task) -> CompiledPredictor | None:
    steps = list(getattr(estimator, "steps", [("model", estimator)]))
    final = steps[-1][1]
    kind = type(final).__name__
    if kind not in COVERED:
        _not_covered(f"{kind} is not a HistGradientBoosting model")
        return None
    if (task == "classification") != (kind == "HistGradientBoostingClassifier"):
        _not_covered(f"{kind} does not serve a {task} contract")
        return None
    if bool(getattr(final, "is_categorical_", None) is not None and np.any(final.is_categorical_)):
        _not_covered("categorical features are not covered")
        return None
    transforms = [_transform(step) for _, step in steps[:-1]]
    if any(transform is None for transform in transforms):
        _not_covered("a pipeline step has no transform")
        return None
    predictor = CompiledPredictor([t for t in transforms if t is not None], CompiledTrees(final))
    sklearn = estimator.predict_proba if task == "classification" else estimator.predict
    expected = np.asarray(sklearn(check_rows), dtype=np.float64)
    if task == "regression":
        expected = expected.reshape(-1)
    for way, outputs in (
        ("in one call", predictor(check_rows)),
        ("tree by tree", run_steps(predictor.in_steps(check_rows))),
    ):
        if not np.array_equal(outputs, expected):
            _log_fallback(f"its predictions {way} differ from scikit-learn's on {len(check_rows)} check rows")
            return None
    return predictor


def _not_covered(cause: str) -> None:
    logging.getLogger(LOGGER_NAME).info(
        "compiled predictor not built, predicting with scikit-learn", extra={"cause": cause}
    )


def _log_fallback(cause: str) -> None:
    logging.getLogger(LOGGER_NAME).warning(
        "compiled predictor not used, predicting with scikit-learn", extra={"cause": cause}
    )


def _transform(step: Any) -> Transform | None:
    """Plain arithmetic for a StandardScaler (as its transform computes it); other steps as they are."""
    if step is None or step == "passthrough":
        return lambda rows: rows
    if type(step).__name__ == "StandardScaler":
        mean = step.mean_ if step.with_mean else None
        scale = step.scale_ if step.with_std else None

        def scaled(rows: Rows) -> Rows:
            out = np.array(rows, dtype=np.float64)
            if mean is not None:
                out -= mean
            if scale is not None:
                out /= scale
            return out

        return scaled
    transform = getattr(step, "transform", None)
    if transform is None:
        return None
    return lambda rows: np.asarray(transform(rows), dtype=np.float64)
