"""CLI behaviour without a server: help, the data command, and one-line errors with exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.main import app
from contracts.errors import ConfigError
from contracts.params import CandidateParams, load_params
from tests.conftest import write_params
from training.candidates import build_pipeline

pytestmark = pytest.mark.unit
runner = CliRunner()


def invoke(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    result = runner.invoke(app, list(args), env=env)
    if (
        result.exit_code == 1
        and result.exception is not None
        and not isinstance(result.exception, SystemExit)
    ):
        raise result.exception
    return result.exit_code, result.output


def test_help_lists_every_command() -> None:
    code, output = invoke("--help")
    assert code == 0
    for command in ("data", "train", "promote", "models", "pipeline", "build", "serve", "images", "loadtest"):
        assert command in output


def test_data_summary_as_json(small_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "prepared.csv"
    result = runner.invoke(app, ["data", "--data", str(small_data), "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["rows"] == 3000
    assert summary["split"] == {"train": 2100, "validation": 300, "test": 600}
    assert (
        out.read_text().splitlines()[0]
        == "MedInc,HouseAge,AveRooms,AveBedrms,Population,AveOccup,Latitude,Longitude,MedHouseVal"
    )


def test_data_table(small_data: Path) -> None:
    code, output = invoke("data", "--data", str(small_data))
    assert code == 0, output
    assert "3000 rows" in output
    assert "MedHouseVal" in output


def test_bad_data_exits_3_with_one_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("x,y\n1,2\n")
    code, output = invoke("data", "--data", str(path))
    assert code == 3
    assert output.strip().startswith("error: data lacks columns")
    assert "Traceback" not in output


def test_missing_params_file_exits_2(small_data: Path, tmp_path: Path) -> None:
    code, output = invoke("train", "--data", str(small_data), "--params", str(tmp_path / "none.yaml"))
    assert code == 2
    assert "params file not found" in output


def test_invalid_setting_exits_2(small_data: Path) -> None:
    code, output = invoke("data", env={"TABULA_LOG_FORMAT": "xml", "TABULA_DATA_PATH": str(small_data)})
    assert code == 2
    assert "invalid setting TABULA_LOG_FORMAT: String should match pattern" in output


def test_unknown_candidate_is_rejected(tmp_path: Path) -> None:
    params = load_params(write_params(tmp_path / "p.yaml"))
    with pytest.raises(ConfigError, match=r"unknown candidates \['nope'\]"):
        params.select(["nope"])
    assert list(params.select(["ridge", "linear"])) == ["ridge", "linear"]


@pytest.mark.parametrize(
    ("estimator", "kwargs", "message"),
    [
        ("os.system", {}, "not a scikit-learn class"),
        ("sklearn.linear_model.Nope", {}, "does not exist"),
        ("sklearn.preprocessing.StandardScaler", {}, "not a regressor"),
        ("sklearn.linear_model.Ridge", {"alpha_typo": 1}, "alpha_typo"),
    ],
)
def test_only_valid_sklearn_regressors_are_built(
    estimator: str, kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        build_pipeline(CandidateParams(estimator=estimator, params=kwargs), seed=0)


def test_seed_reaches_estimators_with_random_state() -> None:
    pipeline = build_pipeline(CandidateParams(estimator="sklearn.ensemble.RandomForestRegressor"), seed=11)
    assert pipeline.named_steps["model"].random_state == 11
    scaled = build_pipeline(CandidateParams(estimator="sklearn.linear_model.Ridge", scale=True), seed=11)
    assert list(scaled.named_steps) == ["scale", "model"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("candidates: {}\n", "candidates"),
        ("split: [1\n", "not valid YAML"),
        ("split: {test_size: 2}\ncandidates: {a: {estimator: x}}\n", "split.test_size"),
    ],
)
def test_params_file_errors_name_the_problem(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "params.yaml"
    path.write_text(content)
    with pytest.raises(ConfigError, match=message):
        load_params(path)


def test_committed_params_file_is_valid() -> None:
    from training.config import PROJECT_ROOT

    params = load_params(PROJECT_ROOT / "examples" / "housing" / "params.yaml")
    assert {"linear", "ridge", "random_forest", "gradient_boosting", "hist_gradient_boosting"} <= set(
        params.candidates
    )
    assert (params.split.test_size, params.split.test_seed) == (0.2, 42)
    assert params.promotion.metric == "rmse"
