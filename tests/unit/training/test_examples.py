"""Example folders: the bundled ones load, settings take their defaults, and bad folders fail clearly."""

from __future__ import annotations

from pathlib import Path

import pytest

from contracts.data import load_dataset
from contracts.errors import ConfigError
from contracts.examples import EXAMPLES_ROOT, load_example
from contracts.params import load_params
from training.candidates import build_pipeline
from training.config import PROJECT_ROOT, TrainingSettings

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("name", "task", "model_name", "kind"),
    [
        ("housing", "regression", "housing-price", "regressor"),
        ("iris", "classification", "iris-species", "classifier"),
    ],
)
def test_bundled_examples_and_their_params_load(name: str, task: str, model_name: str, kind: str) -> None:
    example = load_example(name)
    assert example.folder == EXAMPLES_ROOT / name
    assert example.spec.task == task
    assert example.spec.model_name == model_name
    params = load_params(example.params_file)
    # Every candidate of the example builds as an estimator of its task.
    for candidate in params.candidates.values():
        build_pipeline(candidate, params.split.seed, kind)


def test_iris_declares_the_three_required_classifiers_and_log_loss() -> None:
    params = load_params(load_example("iris").params_file)
    estimators = {candidate.estimator for candidate in params.candidates.values()}
    assert {
        "sklearn.linear_model.LogisticRegression",
        "sklearn.ensemble.RandomForestClassifier",
        "sklearn.ensemble.HistGradientBoostingClassifier",
    } <= estimators
    assert params.promotion.metric == "log_loss"


def test_housing_declares_californias_bounding_box() -> None:
    features = {spec.name: spec for spec in load_example("housing").spec.features}
    assert (features["Latitude"].minimum, features["Latitude"].maximum) == (32.0, 42.5)
    assert (features["Longitude"].minimum, features["Longitude"].maximum) == (-125.0, -114.0)
    assert all(features[name].minimum == 0 for name in ("MedInc", "HouseAge", "Population", "AveOccup"))


def test_settings_default_to_the_housing_example(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("TABULA_EXAMPLE", "TABULA_MODEL_NAME", "TABULA_EXPERIMENT", "TABULA_PARAMS_FILE"):
        monkeypatch.delenv(name, raising=False)
    settings = TrainingSettings()
    assert settings.example == "housing"
    assert settings.model_name == "housing-price"
    assert settings.experiment == "housing"
    assert settings.target == "MedHouseVal"
    assert settings.features[-2:] == ["Latitude", "Longitude"]
    assert settings.params_file == PROJECT_ROOT / "examples" / "housing" / "params.yaml"


def test_the_example_setting_selects_every_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TABULA_EXAMPLE", "iris")
    monkeypatch.delenv("TABULA_MODEL_NAME", raising=False)
    settings = TrainingSettings()
    assert (settings.model_name, settings.experiment, settings.target) == ("iris-species", "iris", "species")
    assert settings.features == ["sepal_length", "sepal_width", "petal_length", "petal_width"]
    assert settings.params_file == EXAMPLES_ROOT / "iris" / "params.yaml"


def test_explicit_settings_win_over_the_example(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TABULA_MODEL_NAME", "my-iris")
    monkeypatch.setenv("TABULA_FEATURES", '["petal_length", "petal_width"]')
    settings = TrainingSettings(example="iris", experiment="lab", params_file=tmp_path / "p.yaml")
    assert (settings.model_name, settings.experiment) == ("my-iris", "lab")
    assert settings.features == ["petal_length", "petal_width"]
    assert settings.params_file == tmp_path / "p.yaml"


def test_iris_loads_without_a_download_as_named_species() -> None:
    example = load_example("iris")
    dataset = load_dataset(None, example.spec.feature_names, "species", example)
    assert dataset.source == "sklearn.datasets.load_iris"
    assert len(dataset.features) == 150
    assert sorted(dataset.target.unique()) == ["setosa", "versicolor", "virginica"]
    assert list(dataset.features.columns) == ["sepal_length", "sepal_width", "petal_length", "petal_width"]
    # Same data, same digest; the labels are part of it.
    again = load_dataset(None, example.spec.feature_names, "species", example)
    assert again.digest == dataset.digest


def write_example(folder: Path, body: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "example.yaml").write_text(body, encoding="utf-8")
    return folder


OWN = """
name: mine
task: classification
model_name: mine-model
experiment: mine
dataset: {csv: rows.csv}
target: kind
features:
  - {name: size, minimum: 0}
  - {name: count, type: integer}
"""


def test_your_own_folder_with_a_csv_beside_it(tmp_path: Path) -> None:
    folder = write_example(tmp_path / "mine", OWN)
    rows = "\n".join(f"{i % 7},{i % 3},{'big' if i % 7 > 3 else 'small'}" for i in range(40))
    (folder / "rows.csv").write_text("size,count,kind\n" + rows + "\n", encoding="utf-8")
    settings = TrainingSettings(example=str(folder))
    assert settings.model_name == "mine-model"
    dataset = load_dataset(None, settings.features, settings.target, settings.resolved_example)
    assert dataset.source == str(folder / "rows.csv")
    assert set(dataset.target) == {"big", "small"}


def test_integer_features_must_hold_whole_numbers(tmp_path: Path) -> None:
    from contracts.errors import DataError

    folder = write_example(tmp_path / "mine", OWN)
    (folder / "rows.csv").write_text("size,count,kind\n1,2,a\n2,2.5,b\n", encoding="utf-8")
    example = load_example(str(folder))
    with pytest.raises(DataError, match=r"hard limits \(count: 1 rows \(first 2.5\)\)"):
        load_dataset(None, ["size", "count"], "kind", example)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            OWN.replace("dataset: {csv: rows.csv}", "dataset: {}"),
            "exactly one of dataset.sklearn or dataset.csv",
        ),
        (OWN.replace("task: classification", "task: ranking"), "task"),
        (OWN.replace("name: size, minimum: 0", "name: size, minimum: 5, maximum: 1"), "exceeds maximum"),
        (OWN.replace("name: size", "name: 'bad name'"), "features.0.name"),
        (OWN.replace("name: size", "name: class"), "Python keyword"),
        ("name: [unclosed\n", "not valid YAML"),
    ],
    ids=["no-source", "unknown-task", "bounds", "field-name", "keyword", "yaml"],
)
def test_bad_example_files_name_the_problem(tmp_path: Path, body: str, message: str) -> None:
    folder = write_example(tmp_path / "bad", body)
    with pytest.raises(ConfigError, match=message):
        load_example(str(folder))


def test_an_unknown_example_lists_the_bundled_ones() -> None:
    with pytest.raises(ConfigError, match=r"no example 'nope': give one of \['housing', 'iris'\]"):
        TrainingSettings(example="nope")
