"""bentofile.yaml and the service's pinned requirements agree with the project and its lock file."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
import typer
import yaml
from typer.testing import CliRunner

from cli.service import register
from service.packaging import PackagingError, _bentofile_with, _bentoml_name

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[3]


def lock_versions() -> dict[str, str]:
    lock = tomllib.loads((ROOT / "uv.lock").read_text(encoding="utf-8"))
    return {package["name"]: package["version"] for package in lock["package"] if "version" in package}


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_service_requirements_are_pinned_to_the_lock() -> None:
    locked = {normalise(name): version for name, version in lock_versions().items()}
    pins = {}
    for line in (ROOT / "service" / "requirements.txt").read_text(encoding="utf-8").splitlines():
        requirement = line.split(";", 1)[0].strip()
        if requirement and not requirement.startswith("#"):
            name, _, version = requirement.partition("==")
            pins[normalise(name)] = version
    assert pins, "no pins found"
    mismatched = {
        name: (version, locked.get(name)) for name, version in pins.items() if locked.get(name) != version
    }
    assert not mismatched
    for direct in ("bentoml", "scikit-learn", "skops", "fastapi", "sqlalchemy", "prometheus-client"):
        assert direct in pins
    assert "mlflow" not in pins  # the served process never needs MLflow


def test_bentofile_serves_the_service_with_only_what_it_needs() -> None:
    config = yaml.safe_load((ROOT / "bentofile.yaml").read_text(encoding="utf-8"))
    assert config["service"] == "service.service:TabulaService"
    assert config["python"]["requirements_txt"] == "./service/requirements.txt"
    # The service loads models with the shared skops allow-list (contracts/modelio.py).
    assert set(config["include"]) == {"service/**/*.py", "contracts/*.py"}
    assert "service/packaging.py" in config["exclude"]
    assert config["docker"]["env"]["OMP_NUM_THREADS"] == "1"


def test_base_image_override_replaces_distro(tmp_path: Path) -> None:
    assert _bentofile_with(tmp_path, None) == ROOT / "bentofile.yaml"
    docker = yaml.safe_load(_bentofile_with(tmp_path, "localhost/debian-python:bookworm").read_text())[
        "docker"
    ]
    assert docker["base_image"] == "localhost/debian-python:bookworm"
    assert "distro" not in docker
    assert "python_version" not in docker


def test_bentoml_names() -> None:
    assert _bentoml_name("Housing Price/v2") == "housing-price-v2"
    with pytest.raises(PackagingError):
        _bentoml_name("///")


def test_cli_commands_and_usage_errors() -> None:
    app = typer.Typer()
    register(app)
    runner = CliRunner()
    help_text = runner.invoke(app, ["--help"]).output
    assert "build" in help_text
    assert "serve" in help_text
    conflict = runner.invoke(app, ["build", "--version", "2", "--alias", "production"])
    assert conflict.exit_code == 2
    assert conflict.output.strip() == "error: give at most one of --ref, --version and --alias"
    assert runner.invoke(app, ["build", "--version", "two"]).exit_code == 2
    assert runner.invoke(app, ["serve", "--bento", "tabula:1", "--model-tag", "m:1"]).exit_code == 2
