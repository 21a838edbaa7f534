"""California Housing from the raw StatLib file: the per-household averages scikit-learn derives.

Frames already in scikit-learn's layout (its fetcher, or a prepared CSV) pass through unchanged.
"""

from __future__ import annotations

import pandas as pd

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


def _numeric(raw: pd.DataFrame) -> pd.DataFrame:
    """The StatLib columns as numbers, naming the first cell that is not one."""
    columns = {}
    for column in sorted(STATLIB_COLUMNS):
        values = pd.to_numeric(raw[column], errors="coerce")
        bad = values.isna() & raw[column].notna()
        if bad.any():
            row = int(bad.to_numpy().nonzero()[0][0])
            raise ValueError(
                f"column {column!r} is not numeric: row {row + 1} holds {raw[column].iloc[row]!r}"
            )
        columns[column] = values.astype("float64")
    return pd.DataFrame(columns, index=raw.index)


def derive_statlib(raw: pd.DataFrame) -> pd.DataFrame:
    """scikit-learn's California Housing frame from the raw StatLib columns."""
    households = raw["households"]
    if (households <= 0).any():
        raise ValueError("column 'households' must be positive: it divides the per-household averages")
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


def prepare(frame: pd.DataFrame) -> pd.DataFrame:
    if set(frame.columns) >= STATLIB_COLUMNS:
        return derive_statlib(_numeric(frame))
    return frame
