"""Data loading, feature derivation and validation: every bad file gets a clear error."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from contracts.data import digest, load_dataset, split_dataset
from contracts.errors import DataError
from contracts.examples import load_example
from examples.housing.prepare import derive_statlib

pytestmark = pytest.mark.unit
FEATURES = load_example("housing").spec.feature_names


def load(path: Path | None) -> object:
    return load_dataset(path, FEATURES, "MedHouseVal")


def test_statlib_file_matches_sklearn_reference_statistics(data_path: Path) -> None:
    dataset = load_dataset(data_path, FEATURES, "MedHouseVal")
    frame = dataset.frame
    # Reference statistics of scikit-learn's derived frame (../shared/data/README.md).
    assert len(frame) == 20640
    assert list(frame.columns) == [*FEATURES, "MedHouseVal"]
    assert frame["MedInc"].mean() == pytest.approx(3.870671, abs=1e-6)
    assert frame["AveRooms"].mean() == pytest.approx(5.428999, abs=1e-6)
    assert frame["MedHouseVal"].mean() == pytest.approx(2.068558, abs=1e-6)
    assert frame["MedHouseVal"].min() == pytest.approx(0.14999)
    assert frame["MedHouseVal"].max() == pytest.approx(5.00001)


def test_uncompressed_file_matches_published_checksum(data_path: Path) -> None:
    import hashlib

    with gzip.open(data_path, "rb") as handle:
        checksum = hashlib.sha256(handle.read()).hexdigest()
    assert checksum == "534365b6c3c9b07c2b7d88e0ff9f1b41725d8b799748f5c0b80e1067f51c8ab3"


def test_sklearn_layout_loads_the_same_frame_and_digest(data_path: Path, tmp_path: Path) -> None:
    from_raw = load_dataset(data_path, FEATURES, "MedHouseVal")
    path = tmp_path / "sklearn.csv.gz"
    from_raw.frame.to_csv(path, index=False, float_format="%.17g")
    from_sklearn_layout = load_dataset(path, FEATURES, "MedHouseVal")
    pd.testing.assert_frame_equal(from_sklearn_layout.frame, from_raw.frame)
    assert from_sklearn_layout.digest == from_raw.digest


def test_derivation_divides_by_households() -> None:
    raw = pd.DataFrame(
        {
            "longitude": [-122.0],
            "latitude": [37.0],
            "housing_median_age": [10.0],
            "total_rooms": [50.0],
            "total_bedrooms": [10.0],
            "population": [30.0],
            "households": [10.0],
            "median_income": [4.5],
            "median_house_value": [250_000.0],
        }
    )
    derived = derive_statlib(raw).iloc[0]
    assert derived["AveRooms"] == 5.0
    assert derived["AveBedrms"] == 1.0
    assert derived["AveOccup"] == 3.0
    assert derived["MedHouseVal"] == 2.5


def write(tmp_path: Path, text: str, name: str = "data.csv") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


HEADER = ",".join([*FEATURES, "MedHouseVal"])
GOOD_ROW = "3.5,20,5.1,1.0,1000,3.0,37.5,-122.1,2.1"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "empty"),
        (HEADER + "\n", "no rows"),
        ("a,b\n1,2\n", "lacks columns"),
        (
            HEADER + "\n" + GOOD_ROW.replace("3.5", "lots", 1) + "\n",
            "'MedInc' is not numeric: row 1 holds 'lots'",
        ),
        (HEADER + "\n" + GOOD_ROW + "\n" + GOOD_ROW.replace("20", "", 1) + "\n", "missing or infinite"),
        (HEADER + "\n" + GOOD_ROW.replace("1000", "inf") + "\n", "Population: 1"),
    ],
    ids=["empty", "header-only", "wrong-columns", "non-numeric", "nan", "inf"],
)
def test_bad_files_raise_a_clear_error(tmp_path: Path, content: str, message: str) -> None:
    with pytest.raises(DataError, match=message):
        load(write(tmp_path, content))


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        load(tmp_path / "nope.csv")


def test_corrupt_gzip(tmp_path: Path) -> None:
    path = tmp_path / "broken.csv.gz"
    path.write_bytes(b"\x1f\x8b\x08 not really gzip")
    with pytest.raises(DataError, match="cannot parse"):
        load(path)


def test_statlib_layout_with_zero_households_is_rejected(tmp_path: Path) -> None:
    header = "longitude,latitude,housing_median_age,total_rooms,total_bedrooms,population,households,"
    header += "median_income,median_house_value"
    with pytest.raises(DataError, match="households"):
        load(write(tmp_path, header + "\n-122,37,10,50,10,30,0,4.5,250000\n"))


def test_download_failure_says_how_to_supply_data(monkeypatch: pytest.MonkeyPatch) -> None:
    import sklearn.datasets

    def offline(**_: object) -> None:
        raise OSError("network is unreachable")

    monkeypatch.setattr(sklearn.datasets, "fetch_california_housing", offline)
    with pytest.raises(DataError, match="TABULA_DATA_PATH"):
        load(None)


def test_training_rows_outside_the_hard_limits_are_refused(tmp_path: Path) -> None:
    # Latitude 50 lies outside California's bounding box, declared in examples/housing/example.yaml.
    path = write(tmp_path, HEADER + "\n" + GOOD_ROW + "\n" + GOOD_ROW.replace("37.5", "50.0") + "\n")
    with pytest.raises(DataError, match=r"hard limits \(Latitude: 1 rows \(first 50\)\)"):
        load(path)


def test_custom_feature_columns_are_honoured(tmp_path: Path) -> None:
    path = write(tmp_path, "size,rooms,price\n" + "\n".join(f"{i},{i % 5},{i * 2}" for i in range(20)))
    dataset = load_dataset(path, ["size", "rooms"], "price")
    assert list(dataset.features.columns) == ["size", "rooms"]
    assert dataset.target.name == "price"


def test_split_is_deterministic_and_test_rows_ignore_the_training_seed(data_path: Path) -> None:
    dataset = load_dataset(data_path, FEATURES, "MedHouseVal")
    first = split_dataset(dataset, test_size=0.2, test_seed=42, validation_size=0.1, seed=1)
    again = split_dataset(dataset, test_size=0.2, test_seed=42, validation_size=0.1, seed=1)
    other_seed = split_dataset(dataset, test_size=0.2, test_seed=42, validation_size=0.1, seed=2)
    assert first.x_test.index.equals(again.x_test.index)
    assert first.x_val.index.equals(again.x_val.index)
    assert first.x_test.index.equals(other_seed.x_test.index)
    assert not first.x_val.index.equals(other_seed.x_val.index)
    assert (len(first.x_train), len(first.x_val), len(first.x_test)) == (14448, 2064, 4128)
    assert not set(first.x_test.index) & set(first.x_train.index) | set(first.x_val.index) & set(
        first.x_test.index
    )


def test_split_rejects_impossible_sizes(data_path: Path) -> None:
    dataset = load_dataset(data_path, FEATURES, "MedHouseVal")
    with pytest.raises(DataError, match="strictly between"):
        split_dataset(dataset, test_size=0.6, test_seed=42, validation_size=0.5, seed=1)


def test_digest_changes_with_any_value() -> None:
    frame = pd.DataFrame({"a": np.arange(5.0), "b": np.ones(5)})
    changed = frame.copy()
    changed.loc[3, "b"] = 1.0000001
    assert digest(frame) == digest(frame.copy())
    assert digest(frame) != digest(changed)
    assert digest(frame) != digest(frame.rename(columns={"a": "c"}))
