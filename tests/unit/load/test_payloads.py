"""The shipped payloads: rows of each example's held-out test split, rebuilt exactly from data and seed."""

import json
import math
from pathlib import Path

import pytest

from contracts.artifacts import GoldenSet
from contracts.errors import ConfigError
from contracts.examples import load_example
from load.config import DEFAULT_PAYLOADS_FILE, PAYLOADS_FILE, LoadSettings
from load.payloads import PayloadSet, build_payloads, example_rows, load_rows, read_rows

pytestmark = pytest.mark.unit

HOUSING = load_example("housing")
IRIS = load_example("iris")
FEATURE_NAMES = HOUSING.spec.feature_names


def test_shipped_payloads_are_valid_request_rows() -> None:
    payloads = PayloadSet.model_validate_json(DEFAULT_PAYLOADS_FILE.read_text(encoding="utf-8"))

    assert HOUSING.folder / PAYLOADS_FILE == DEFAULT_PAYLOADS_FILE
    assert (payloads.example, payloads.features) == ("housing", FEATURE_NAMES)
    assert len(payloads.rows) == 500
    assert all(list(row) == list(FEATURE_NAMES) for row in payloads.rows)
    assert all(math.isfinite(value) for row in payloads.rows for value in row.values())
    # Distinct block groups, not one row repeated.
    assert len({(row["Latitude"], row["Longitude"], row["MedInc"]) for row in payloads.rows}) > 490


def test_shipped_payloads_are_rebuilt_from_trainings_test_split(data_path: Path) -> None:
    shipped = PayloadSet.model_validate_json(DEFAULT_PAYLOADS_FILE.read_text(encoding="utf-8"))

    rebuilt = build_payloads(HOUSING, data_path, sample_seed=shipped.sample_seed, n_rows=len(shipped.rows))

    assert rebuilt == shipped


def test_iris_payloads_are_its_whole_stratified_test_split() -> None:
    """Iris is bundled (load_iris): its rows rebuild without any data file."""
    shipped = PayloadSet.model_validate_json((IRIS.folder / PAYLOADS_FILE).read_text(encoding="utf-8"))

    rebuilt = build_payloads(IRIS, None, sample_seed=shipped.sample_seed, n_rows=500)

    assert rebuilt == shipped
    assert shipped.features == ["sepal_length", "sepal_width", "petal_length", "petal_width"]
    assert len(shipped.rows) == 30  # test_size 0.2 of 150 flowers
    assert shipped.source == "sklearn.datasets.load_iris"


def test_rows_come_from_the_settings_example_or_the_named_file(tmp_path: Path) -> None:
    assert load_rows(LoadSettings()) == read_rows(DEFAULT_PAYLOADS_FILE)
    assert list(load_rows(LoadSettings(example="iris"))[0]) == IRIS.spec.feature_names
    golden = GoldenSet(feature_names=["a", "b"], rows=[[1.0, 2.0]], predictions=[0.5])
    path = golden.write(tmp_path / "golden_set.json")
    assert load_rows(LoadSettings(example="iris", payloads_file=path)) == [{"a": 1.0, "b": 2.0}]


def copy_example(source: Path, folder: Path, with_payloads: bool) -> Path:
    folder.mkdir()
    for name in ("example.yaml", "params.yaml", *((PAYLOADS_FILE,) if with_payloads else ())):
        (folder / name).write_text((source / name).read_text(encoding="utf-8"), encoding="utf-8")
    return folder


def test_an_example_without_payloads_gets_rows_drawn_from_its_test_split(tmp_path: Path) -> None:
    folder = copy_example(IRIS.folder, tmp_path / "my-flowers", with_payloads=False)

    rows = load_rows(LoadSettings(example=str(folder)))

    assert rows == read_rows(IRIS.folder / PAYLOADS_FILE)


def test_payloads_of_other_features_than_the_example_declares_are_refused(tmp_path: Path) -> None:
    folder = copy_example(IRIS.folder, tmp_path / "renamed", with_payloads=True)
    spec = (folder / "example.yaml").read_text(encoding="utf-8")
    (folder / "example.yaml").write_text(spec.replace("sepal_length", "sepal_len"), encoding="utf-8")

    with pytest.raises(
        ConfigError, match=r"declares .*sepal_len.*: rebuild it with `python -m load\.payloads"
    ):
        example_rows(load_example(str(folder)))


def test_integer_features_are_sent_as_json_integers(tmp_path: Path) -> None:
    """The service's request model is strict: 3.0 is no integer."""
    folder = copy_example(IRIS.folder, tmp_path / "whole", with_payloads=False)
    spec = (folder / "example.yaml").read_text(encoding="utf-8")
    (folder / "example.yaml").write_text(
        spec.replace("{name: sepal_length,", "{name: sepal_length, type: integer,"), encoding="utf-8"
    )
    example = load_example(str(folder))
    # load_iris' sepal lengths have one decimal: round them to whole numbers as a user's data would be.
    csv = tmp_path / "whole.csv"
    from sklearn.datasets import load_iris

    frame = load_iris(as_frame=True).frame
    frame["sepal length (cm)"] = frame["sepal length (cm)"].round()
    frame.to_csv(csv, index=False)

    payloads = build_payloads(example, csv, sample_seed=1, n_rows=5)

    assert all(type(row["sepal_length"]) is int for row in payloads.rows)
    assert all(type(row["petal_length"]) is float for row in payloads.rows)
    assert json.loads(payloads.model_dump_json())["rows"] == [dict(row) for row in payloads.rows]


def test_rows_can_come_from_a_models_golden_set(tmp_path: Path) -> None:
    golden = GoldenSet(
        feature_names=list(FEATURE_NAMES),
        rows=[
            [8.3, 41.0, 6.9, 1.0, 322.0, 2.5, 37.88, -122.23],
            [2.0, 20.0, 5.0, 1.1, 900.0, 3.0, 34.0, -118.0],
        ],
        predictions=[4.5, 1.7],
    )
    path = golden.write(tmp_path / "golden_set.json")

    rows = read_rows(path)

    assert rows == [dict(zip(FEATURE_NAMES, values, strict=True)) for values in golden.rows]


def test_rows_can_come_from_a_classifiers_golden_set(tmp_path: Path) -> None:
    golden = GoldenSet(
        feature_names=IRIS.spec.feature_names,
        rows=[[5.1, 3.5, 1.4, 0.2]],
        classes=["setosa", "versicolor", "virginica"],
        labels=["setosa"],
        probabilities=[[0.98, 0.01, 0.01]],
    )
    path = golden.write(tmp_path / "golden_set.json")

    assert read_rows(path) == [dict(zip(IRIS.spec.feature_names, [5.1, 3.5, 1.4, 0.2], strict=True))]


def test_a_payloads_file_with_a_missing_feature_is_refused(tmp_path: Path) -> None:
    row = dict.fromkeys(FEATURE_NAMES, 1.0)
    del row["AveOccup"]
    path = tmp_path / "payloads.json"
    document = {
        "example": "housing",
        "features": FEATURE_NAMES,
        "source": "x",
        "data_digest": "0",
        "test_size": 0.2,
        "test_seed": 1,
        "sample_seed": 1,
        "rows": [row],
    }
    path.write_text(json.dumps(document), encoding="utf-8")

    with pytest.raises(ValueError, match="row 0 must have exactly the features"):
        read_rows(path)
