"""Load, validate, split and fingerprint the training data of an example.

The rows come from ``--data`` / ``TABULA_DATA_PATH`` (a CSV/CSV.gz) or, when unset, from the example's
own source (a scikit-learn loader or a CSV beside it); the example's ``prepare`` hook and renames turn
them into the contract's columns. Features must be finite numbers within the example's hard limits;
a classification target is a label (kept as text), a regression target a finite number.
"""

from __future__ import annotations

import hashlib
import importlib
import logging
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from contracts.errors import ConfigError, DataError
from contracts.examples import DEFAULT_EXAMPLE, Example, load_example
from contracts.model import FeatureSpec, Task

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Dataset:
    """Features and target in model order, with where they came from and a content digest."""

    features: pd.DataFrame
    target: pd.Series
    source: str
    digest: str

    @property
    def frame(self) -> pd.DataFrame:
        return self.features.assign(**{str(self.target.name): self.target})


@dataclass(frozen=True)
class Split:
    """Seeded train / validation / test partition; the test rows depend only on the data and test seed."""

    x_train: pd.DataFrame
    y_train: pd.Series
    x_val: pd.DataFrame
    y_val: pd.Series
    x_test: pd.DataFrame
    y_test: pd.Series


def _read_csv(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise DataError(f"data file not found: {path}")
    try:
        frame = pd.read_csv(path, compression="infer")
    except pd.errors.EmptyDataError as exc:
        raise DataError(f"data file is empty: {path}") from exc
    except (pd.errors.ParserError, UnicodeDecodeError, OSError, EOFError, zlib.error) as exc:
        raise DataError(f"cannot parse {path} as CSV: {exc}") from exc
    if frame.empty:
        raise DataError(f"data file has a header but no rows: {path}")
    frame.columns = [str(column).strip() for column in frame.columns]
    return frame


def _fetch_sklearn(loader_name: str, task: Task) -> pd.DataFrame:
    """A scikit-learn bundled or downloaded data set as one frame; class indices become class names."""
    loader = getattr(importlib.import_module("sklearn.datasets"), loader_name, None)
    if loader is None:
        raise ConfigError(f"sklearn.datasets has no loader {loader_name!r}")
    try:
        bunch = loader(as_frame=True)
    except OSError as exc:
        raise DataError(
            f"could not download the data of sklearn.datasets.{loader_name} "
            f"({exc.__class__.__name__}); pass --data PATH or set TABULA_DATA_PATH to a CSV/CSV.gz"
        ) from exc
    frame: pd.DataFrame = bunch.frame.copy()
    names = getattr(bunch, "target_names", None)
    target = bunch.target
    if task == "classification" and names is not None and isinstance(target, pd.Series):
        frame[target.name] = np.asarray(names)[target.to_numpy()]
    return frame


def _numeric(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """Columns as float64, naming the first offending cell of any column that is not numeric."""
    numeric = {}
    for column in columns:
        values = pd.to_numeric(frame[column], errors="coerce")
        bad = values.isna() & frame[column].notna()
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise DataError(
                f"column {column!r} is not numeric: row {row + 1} holds {frame[column].iloc[row]!r}"
            )
        numeric[column] = values.astype("float64")
    return pd.DataFrame(numeric, index=frame.index)


def _check_finite(frame: pd.DataFrame) -> None:
    values = frame.to_numpy()
    not_finite = ~np.isfinite(values)
    if not_finite.any():
        counts = {
            column: int(count) for column, count in zip(frame.columns, not_finite.sum(axis=0), strict=True)
        }
        where = ", ".join(f"{column}: {count}" for column, count in counts.items() if count)
        raise DataError(f"data holds missing or infinite values ({where})")


def _check_limits(frame: pd.DataFrame, specs: dict[str, FeatureSpec]) -> None:
    """Training rows must satisfy the hard limits the service will enforce: a model never learns from
    inputs it would refuse to serve."""
    problems = []
    for column in frame.columns:
        spec = specs.get(str(column))
        if spec is None:
            continue
        values = frame[column].to_numpy()
        outside = np.zeros(values.size, dtype=bool)
        if spec.minimum is not None:
            outside |= values < spec.minimum
        if spec.maximum is not None:
            outside |= values > spec.maximum
        if spec.type == "integer":
            outside |= values != np.round(values)
        if outside.any():
            problems.append(f"{column}: {int(outside.sum())} rows (first {float(values[outside][0]):g})")
    if problems:
        raise DataError(f"data breaks the example's hard limits ({'; '.join(problems)})")


def _labels(frame: pd.DataFrame, target: str) -> pd.Series:
    """A classification target as text labels; a missing label is an error, not a class."""
    column = frame[target]
    missing = column.isna() | (column.astype(str).str.strip() == "")
    if missing.any():
        row = int(np.flatnonzero(missing.to_numpy())[0])
        raise DataError(f"target column {target!r} has no label in row {row + 1}")
    labels = column.astype(str).str.strip()
    if labels.nunique() < 2:
        raise DataError(f"target column {target!r} holds a single class: nothing to classify")
    return labels.rename(target)


def digest(frame: pd.DataFrame) -> str:
    """Content fingerprint: same columns and values in the same order give the same digest.

    Numeric columns are hashed as float64; a frame with a text (label) column hashes its numeric part,
    then every label, so a relabelled row changes the digest too.
    """
    hasher = hashlib.sha256()
    hasher.update("\x1f".join(map(str, frame.columns)).encode())
    text = [column for column in frame.columns if not pd.api.types.is_numeric_dtype(frame[column])]
    numeric = frame.drop(columns=text)
    hasher.update(np.ascontiguousarray(numeric.to_numpy(dtype="float64")).tobytes())
    for column in text:
        hasher.update("\x1e".join(frame[column].astype(str)).encode())
    return hasher.hexdigest()[:16]


def load_dataset(
    path: Path | None, features: list[str], target: str, example: Example | None = None
) -> Dataset:
    """Read, prepare and validate the data; raise :class:`DataError` with a readable message.

    ``path`` replaces the example's own source; ``example`` defaults to the default (housing) example.
    """
    example = example or load_example(DEFAULT_EXAMPLE)
    source_spec, task = example.spec.dataset, example.spec.task
    given = path is not None
    path = path or example.default_csv()
    if path is None:
        assert source_spec.sklearn is not None  # noqa: S101 - DatasetSource holds exactly one source
        raw, source = _fetch_sklearn(source_spec.sklearn, task), f"sklearn.datasets.{source_spec.sklearn}"
    else:
        raw, source = _read_csv(path), str(path)
    prepare = example.prepare_hook()
    if prepare is not None:
        try:
            raw = prepare(raw)
        except (ValueError, KeyError, TypeError) as exc:
            raise DataError(f"example {example.spec.name!r} could not prepare {source}: {exc}") from exc
    raw = raw.rename(columns=source_spec.rename)
    missing = [column for column in [*features, target] if column not in raw.columns]
    if missing:
        hint = "the raw layout its prepare hook knows, or " if prepare is not None else ""
        origin = f"; {source} came from --data / TABULA_DATA_PATH" if given else ""
        raise DataError(
            f"data lacks columns {missing}; expected {hint}the columns {[*features, target]} "
            f"of example {example.spec.name!r} (found {list(raw.columns)}){origin}"
        )
    raw = raw.reset_index(drop=True)
    feature_frame = _numeric(raw, features)
    _check_finite(feature_frame)
    _check_limits(feature_frame, {spec.name: spec for spec in example.spec.features})
    if task == "classification":
        target_values = _labels(raw, target)
    else:
        target_frame = _numeric(raw, [target])
        _check_finite(target_frame)
        target_values = target_frame[target]
    frame = feature_frame.assign(**{target: target_values})
    logger.info("loaded %d rows from %s", len(frame), source)
    return Dataset(features=frame[features], target=frame[target], source=source, digest=digest(frame))


def split_dataset(
    dataset: Dataset,
    *,
    test_size: float,
    test_seed: int,
    validation_size: float,
    seed: int,
    stratify: bool = False,
) -> Split:
    """Hold out the frozen test rows first, then the validation rows from what is left.

    ``stratify`` keeps every class's share the same in each part (classification).
    """
    from sklearn.model_selection import train_test_split

    if not 0 < test_size + validation_size < 1:
        raise DataError("test_size + validation_size must lie strictly between 0 and 1")
    minimum_rows = 10
    if len(dataset.features) < minimum_rows:
        raise DataError(f"need at least {minimum_rows} rows to split, got {len(dataset.features)}")
    try:
        x_rest, x_test, y_rest, y_test = train_test_split(
            dataset.features,
            dataset.target,
            test_size=test_size,
            random_state=test_seed,
            stratify=dataset.target if stratify else None,
        )
        x_train, x_val, y_train, y_val = train_test_split(
            x_rest,
            y_rest,
            test_size=validation_size / (1 - test_size),
            random_state=seed,
            stratify=y_rest if stratify else None,
        )
    except ValueError as exc:
        raise DataError(f"cannot split the data: {exc}") from exc
    return Split(x_train, y_train, x_val, y_val, x_test, y_test)
