"""The import layers cover every package: `lint-imports` (run by `./run test`) checks only the packages
pyproject.toml names, so a new top-level package left out of the contract would go unchecked."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.unit

REPO_ROOT = Path(__file__).resolve().parents[2]
# Python packages at the top of the repository that are not part of the product.
NOT_PRODUCT = {"tests"}


@pytest.fixture(scope="module")
def pyproject() -> dict[str, Any]:
    return tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def top_level_packages() -> set[str]:
    return {path.parent.name for path in REPO_ROOT.glob("*/__init__.py")} - NOT_PRODUCT


def test_every_package_sits_on_exactly_one_layer(pyproject: dict[str, Any]) -> None:
    linter = pyproject["tool"]["importlinter"]
    [layers] = [contract for contract in linter["contracts"] if contract["type"] == "layers"]
    placed = [name for layer in layers["layers"] for name in re.split(r"\s*[|:]\s*", layer)]
    packages = top_level_packages()
    assert sorted(placed) == sorted(packages)
    assert set(linter["root_packages"]) == packages


def test_every_package_is_shipped_type_checked_and_measured(pyproject: dict[str, Any]) -> None:
    packages = top_level_packages()
    assert set(pyproject["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"]) == packages
    assert set(pyproject["tool"]["mypy"]["packages"]) == packages
    assert set(pyproject["tool"]["coverage"]["run"]["source"]) == packages
