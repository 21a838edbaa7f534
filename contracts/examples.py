"""Example folders: everything model-specific (data source, columns, task, hard limits, candidates, gate).

A folder holds ``example.yaml`` (:class:`ExampleSpec`), ``params.yaml``
(:class:`contracts.params.TrainingParams`) and optionally the ``prepare`` hook it names. The bundled
ones live in ``examples/`` (shipped in the wheel); ``TABULA_EXAMPLE`` names one of them or gives the
path of your own.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Self, cast

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from contracts.errors import ConfigError
from contracts.model import FeatureSpec, Task

if TYPE_CHECKING:
    from collections.abc import Callable

    import pandas as pd

    # pandas stays out of the import: the load test's Locust process reads examples too.
    Prepare = Callable[[pd.DataFrame], pd.DataFrame]

EXAMPLES_ROOT = Path(__file__).resolve().parent.parent / "examples"
DEFAULT_EXAMPLE = "housing"
SPEC_FILE = "example.yaml"
PARAMS_FILE = "params.yaml"
# The example's chart values, on top of the chart's defaults (which are the housing example's).
CHART_VALUES_FILE = "values.yaml"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DatasetSource(_Strict):
    """Where the rows come from when no ``--data`` / ``TABULA_DATA_PATH`` is given, and how to read them."""

    sklearn: str | None = Field(
        default=None,
        pattern=r"^(load|fetch)_[a-z0-9_]+$",
        description="A loader of sklearn.datasets (called with as_frame=True), e.g. load_iris.",
    )
    csv: Path | None = Field(default=None, description="A CSV/CSV.gz, relative to the example folder.")
    rename: dict[str, str] = Field(default_factory=dict, description="Raw column name -> contract name.")
    prepare: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9_]+\.py$",
        description="A Python file in the folder defining prepare(frame) -> frame, run before renaming.",
    )

    @model_validator(mode="after")
    def _one_source(self) -> Self:
        if (self.sklearn is None) == (self.csv is None):
            raise ValueError("give exactly one of dataset.sklearn or dataset.csv")
        return self


class ExampleSpec(_Strict):
    """``example.yaml``: what the model is, and the names it is registered and tracked under."""

    name: str = Field(min_length=1, description="Short name of the example.")
    description: str = Field(default="", description="One line: what the model predicts.")
    task: Task = Field(description="regression or classification.")
    model_name: str = Field(
        min_length=1, description="Registered model name (TABULA_MODEL_NAME replaces it)."
    )
    experiment: str = Field(min_length=1, description="MLflow experiment (TABULA_EXPERIMENT replaces it).")
    dataset: DatasetSource
    target: str = Field(min_length=1, description="Target column (TABULA_TARGET replaces it).")
    features: list[FeatureSpec] = Field(
        min_length=1, description="Feature columns in model order, with their hard limits (TABULA_FEATURES)."
    )

    @property
    def feature_names(self) -> list[str]:
        return [feature.name for feature in self.features]


@dataclass(frozen=True)
class Example:
    """An example folder and its validated ``example.yaml``."""

    folder: Path
    spec: ExampleSpec

    @property
    def params_file(self) -> Path:
        return self.folder / PARAMS_FILE

    @property
    def chart_values_files(self) -> tuple[Path, ...]:
        """The folder's chart values overlay, if it has one: the cluster commands apply it first."""
        path = self.folder / CHART_VALUES_FILE
        return (path,) if path.is_file() else ()

    def default_csv(self) -> Path | None:
        csv = self.spec.dataset.csv
        return None if csv is None else self.folder / csv

    def prepare_hook(self) -> Prepare | None:
        """The folder's ``prepare`` function, loaded from its file (the folder is code you chose to run)."""
        if self.spec.dataset.prepare is None:
            return None
        path = self.folder / self.spec.dataset.prepare
        module_spec = importlib.util.spec_from_file_location(f"_example_{self.spec.name}_prepare", path)
        if module_spec is None or module_spec.loader is None or not path.is_file():
            raise ConfigError(f"example {self.spec.name!r}: prepare file not found: {path}")
        module = importlib.util.module_from_spec(module_spec)
        module_spec.loader.exec_module(module)
        hook = getattr(module, "prepare", None)
        if not callable(hook):
            raise ConfigError(f"example {self.spec.name!r}: {path} defines no prepare(frame) function")
        return cast("Prepare", hook)


def example_folder(name_or_path: str) -> Path:
    """A bundled example by name, or the folder at a path."""
    bundled = EXAMPLES_ROOT / name_or_path
    if "/" not in name_or_path and (bundled / SPEC_FILE).is_file():
        return bundled
    folder = Path(name_or_path).expanduser()
    if (folder / SPEC_FILE).is_file():
        return folder.resolve()
    known = sorted(path.parent.name for path in EXAMPLES_ROOT.glob(f"*/{SPEC_FILE}"))
    raise ConfigError(f"no example {name_or_path!r}: give one of {known} or a folder holding {SPEC_FILE}")


def load_example(name_or_path: str) -> Example:
    """Read and validate an example folder's ``example.yaml``."""
    folder = example_folder(name_or_path)
    path = folder / SPEC_FILE
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"example file {path} is not valid YAML: {exc}") from exc
    try:
        return Example(folder=folder, spec=ExampleSpec.model_validate(raw))
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise ConfigError(f"example file {path}: {where}: {first['msg']}") from exc
