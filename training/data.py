"""Load, validate, split and fingerprint the training data.

Accepted inputs: scikit-learn's ``fetch_california_housing()`` (the default), a CSV/CSV.gz in the raw
StatLib layout (derived to scikit-learn's features), or any CSV holding the configured feature and
target columns (the 8-feature scikit-learn layout with ``MedHouseVal`` is one such file).
"""

from __future__ import annotations

import hashlib
import logging
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from training.errors import DataError

logger = logging.getLogger(__name__)

# The raw StatLib file that fetch_california_housing() derives its frame from.
STATLIB_COLUMNS = frozenset(
    {
        "longitude",
        "latitude",
        "housing_median_age",
        "total_rooms",
        "total_bedrooms",
        "population",
        "households",
        "median_income",
        "median_house_value",
    }
)


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


def derive_statlib(raw: pd.DataFrame) -> pd.DataFrame:
    """scikit-learn's California Housing frame from the raw StatLib columns."""
    households = raw["households"]
    if (households <= 0).any():
        raise DataError("column 'households' must be positive: it divides the per-household averages")
    return pd.DataFrame(
        {
            "MedInc": raw["median_income"],
            "HouseAge": raw["housing_median_age"],
            "AveRooms": raw["total_rooms"] / households,
            "AveBedrms": raw["total_bedrooms"] / households,
            "Population": raw["population"],
            "AveOccup": raw["population"] / households,
            "Latitude": raw["latitude"],
            "Longitude": raw["longitude"],
            "MedHouseVal": raw["median_house_value"] / 100_000,
        }
    )


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


def _fetch_sklearn() -> pd.DataFrame:
    from sklearn.datasets import fetch_california_housing

    try:
        bunch = fetch_california_housing(as_frame=True)
    except OSError as exc:
        raise DataError(
            "could not download the California Housing data "
            f"({exc.__class__.__name__}); pass --data PATH or set HOUSING_DATA_PATH to a CSV/CSV.gz"
        ) from exc
    frame: pd.DataFrame = bunch.frame
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


def digest(frame: pd.DataFrame) -> str:
    """Content fingerprint: same columns and values in the same order give the same digest."""
    hasher = hashlib.sha256()
    hasher.update("\x1f".join(map(str, frame.columns)).encode())
    hasher.update(np.ascontiguousarray(frame.to_numpy(dtype="float64")).tobytes())
    return hasher.hexdigest()[:16]


def load_dataset(path: Path | None, features: list[str], target: str) -> Dataset:
    """Read, derive and validate the data; raise :class:`DataError` with a readable message."""
    if path is None:
        raw, source = _fetch_sklearn(), "sklearn.datasets.fetch_california_housing"
    else:
        raw, source = _read_csv(path), str(path)
    if set(raw.columns) >= STATLIB_COLUMNS:
        raw = derive_statlib(_numeric(raw, sorted(STATLIB_COLUMNS)))
    missing = [column for column in [*features, target] if column not in raw.columns]
    if missing:
        raise DataError(
            f"data lacks columns {missing}; expected the raw StatLib layout "
            f"or the columns {[*features, target]} (found {list(raw.columns)})"
        )
    frame = _numeric(raw, [*features, target]).reset_index(drop=True)
    _check_finite(frame)
    logger.info("loaded %d rows from %s", len(frame), source)
    return Dataset(features=frame[features], target=frame[target], source=source, digest=digest(frame))


def split_dataset(
    dataset: Dataset, *, test_size: float, test_seed: int, validation_size: float, seed: int
) -> Split:
    """Hold out the frozen test rows first, then the validation rows from what is left."""
    from sklearn.model_selection import train_test_split

    if not 0 < test_size + validation_size < 1:
        raise DataError("test_size + validation_size must lie strictly between 0 and 1")
    minimum_rows = 10
    if len(dataset.features) < minimum_rows:
        raise DataError(f"need at least {minimum_rows} rows to split, got {len(dataset.features)}")
    x_rest, x_test, y_rest, y_test = train_test_split(
        dataset.features, dataset.target, test_size=test_size, random_state=test_seed
    )
    x_train, x_val, y_train, y_val = train_test_split(
        x_rest, y_rest, test_size=validation_size / (1 - test_size), random_state=seed
    )
    return Split(x_train, y_train, x_val, y_val, x_test, y_test)
