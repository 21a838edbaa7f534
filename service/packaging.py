"""``tabula build``: registered MLflow model -> BentoML model store -> Bento.

The model, its contract, its feature statistics and its golden set are copied into the BentoML
model store, so the Bento carries everything the service needs and never calls the MLflow server.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from contracts.artifacts import (
    CONTRACT_FILE,
    FEATURE_STATS_FILE,
    GOLDEN_SET_FILE,
    Artifact,
    FeatureStatistics,
    GoldenSet,
)
from contracts.errors import ProductError
from contracts.model import ModelContract
from contracts.modelio import SKOPS_FILE, ModelLoadError
from service.config import ServiceSettings
from service.model import ModelInfo, load_model_dir

PROJECT_ROOT = Path(__file__).resolve().parent.parent
BENTOFILE = PROJECT_ROOT / "bentofile.yaml"
MODEL_ARTIFACT_DIR = "model"
# The run's artifacts the service needs beside the model, each validated when it is staged.
ARTIFACTS: dict[str, type[Artifact]] = {
    CONTRACT_FILE: ModelContract,
    FEATURE_STATS_FILE: FeatureStatistics,
    GOLDEN_SET_FILE: GoldenSet,
}


class PackagingError(ProductError):
    """A build that cannot proceed; the CLI prints the message as one line (a registry/MLflow failure)."""

    exit_code = 4


@dataclass(frozen=True)
class ResolvedModel:
    name: str
    version: str
    run_id: str
    alias: str | None
    metrics: dict[str, float]
    data_digest: str | None


def build_bento(model_name: str, ref: str, tracking_uri: str | None) -> str:
    """Package registered model ``model_name`` at ``ref`` (alias or version number); returns the Bento tag."""
    settings = ServiceSettings()
    _refuse_store_inside_project()
    resolved = resolve(model_name, ref, tracking_uri)
    model_tag = import_model(resolved, tracking_uri)
    return build_bento_from_store(model_tag, resolved.version, settings.docker_base_image)


def import_model(resolved: ResolvedModel, tracking_uri: str | None) -> str:
    """Copy the registered model and its artifacts into the BentoML model store; returns the model tag."""
    import bentoml
    from bentoml.exceptions import NotFound

    tag_name = _bentoml_name(resolved.name)
    tag_version = f"v{resolved.version}-{resolved.run_id[:8]}"
    try:
        existing = bentoml.models.get(f"{tag_name}:{tag_version}")
    except NotFound:
        pass
    else:
        # An entry made by an older version of this code may lack an artifact the service now needs
        # (contract.json came later): it is imported again rather than served broken.
        if all((Path(existing.path) / name).is_file() for name in (SKOPS_FILE, *ARTIFACTS)):
            return str(existing.tag)
        bentoml.models.delete(existing.tag)
    with tempfile.TemporaryDirectory(prefix="tabula-build-") as scratch:
        staged = _stage(resolved, tracking_uri, Path(scratch))
        metadata = _metadata(resolved, staged.trusted_types)
        # Fail the build, not the deployment, when the artifacts do not match the model.
        info = ModelInfo.from_metadata(metadata, f"{tag_name}:{tag_version}")
        try:
            loaded = load_model_dir(staged.path, info)
        except ModelLoadError as load_error:
            raise PackagingError(str(load_error)) from None
        error = loaded.golden_error()
        if error > loaded.golden.tolerance:
            raise PackagingError(
                f"model {resolved.name} v{resolved.version} misses its golden set by {error:.3g}"
                f" (tolerance {loaded.golden.tolerance:.3g})"
            )
        with bentoml.models.create(
            f"{tag_name}:{tag_version}",
            labels={
                "model_version": resolved.version,
                "alias": resolved.alias or "",
                "run_id": resolved.run_id,
            },
            metadata=metadata,
        ) as bento_model:
            for name in (SKOPS_FILE, *ARTIFACTS):
                shutil.copy2(staged.path / name, Path(bento_model.path) / name)
        return str(bento_model.tag)


def resolve(model_name: str, ref: str, tracking_uri: str | None) -> ResolvedModel:
    """Registry facts about ``model_name`` at alias or version ``ref``."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient(tracking_uri=tracking_uri)
    try:
        if ref.isdigit():
            version = client.get_model_version(model_name, ref)
            alias = next(iter(version.aliases), None) if version.aliases else None
        else:
            version = client.get_model_version_by_alias(model_name, ref)
            alias = ref
        run = client.get_run(str(version.run_id))
    except MlflowException as error:
        raise PackagingError(f"cannot resolve model {model_name}@{ref}: {error.message}") from error
    return ResolvedModel(
        name=model_name,
        version=str(version.version),
        run_id=str(version.run_id),
        alias=alias,
        metrics={key: float(value) for key, value in run.data.metrics.items()},
        data_digest=run.data.tags.get("data_digest"),
    )


@dataclass(frozen=True)
class _Staged:
    path: Path
    trusted_types: list[str]


def _stage(resolved: ResolvedModel, tracking_uri: str | None, scratch: Path) -> _Staged:
    """Download model and artifacts into ``scratch/bundle``, validating the artifact schemas."""
    import mlflow

    bundle = scratch / "bundle"
    bundle.mkdir()
    model_dir = Path(
        mlflow.artifacts.download_artifacts(
            artifact_uri=f"models:/{resolved.name}/{resolved.version}",
            dst_path=str(scratch / MODEL_ARTIFACT_DIR),
            tracking_uri=tracking_uri,
        )
    )
    flavor = _sklearn_flavor(model_dir)
    if flavor.get("serialization_format") != "skops":
        raise PackagingError(
            f"model {resolved.name} v{resolved.version} is not saved with skops"
            f" ({flavor.get('serialization_format')}); only the safe skops format is served"
        )
    shutil.copy2(model_dir / str(flavor["pickled_model"]), bundle / SKOPS_FILE)
    for name, schema in ARTIFACTS.items():
        try:
            downloaded = mlflow.artifacts.download_artifacts(
                run_id=resolved.run_id, artifact_path=name, dst_path=str(scratch), tracking_uri=tracking_uri
            )
            schema.read(Path(downloaded))
            shutil.copy2(downloaded, bundle / name)
        except Exception as error:
            raise PackagingError(f"run {resolved.run_id} has no valid {name}: {error}") from error
    return _Staged(path=bundle, trusted_types=list(flavor.get("skops_trusted_types") or []))


def _sklearn_flavor(model_dir: Path) -> dict[str, Any]:
    mlmodel = yaml.safe_load((model_dir / "MLmodel").read_text(encoding="utf-8"))
    flavor = mlmodel.get("flavors", {}).get("sklearn")
    if flavor is None:
        raise PackagingError(f"{model_dir} is not an MLflow sklearn model")
    return dict(flavor)


def _metadata(resolved: ResolvedModel, trusted_types: list[str]) -> dict[str, Any]:
    """BentoML model metadata; unknown facts are left out (BentoML refuses None values)."""
    metadata = {
        "registered_name": resolved.name,
        "registered_version": resolved.version,
        "run_id": resolved.run_id,
        "alias": resolved.alias,
        "metrics": resolved.metrics,
        "data_digest": resolved.data_digest,
        "skops_trusted_types": trusted_types,
    }
    return {key: value for key, value in metadata.items() if value is not None}


def build_bento_from_store(model_tag: str, model_version: str, base_image: str | None) -> str:
    """``bentoml build`` in a child process, which imports the service module with the model tag argument."""
    with tempfile.TemporaryDirectory(prefix="tabula-bentofile-") as scratch:
        bentofile = _bentofile_with(Path(scratch), base_image)
        command = [
            sys.executable, "-m", "bentoml", "build", str(PROJECT_ROOT),
            "--bentofile", str(bentofile),
            "--arg", f"model_tag={model_tag}",
            "--label", f"model_version={model_version}",
            "--label", f"model_tag={model_tag.replace(':', '_')}",
            "--output", "tag",
        ]  # fmt: skip
        result = subprocess.run(command, capture_output=True, text=True, check=False, cwd=PROJECT_ROOT)  # noqa: S603
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise PackagingError(f"bentoml build failed: {last}")
    # With `-o tag` the last line is `__tag__:<name>:<version>`.
    for line in reversed(result.stdout.strip().splitlines()):
        if line.startswith("__tag__:"):
            return line.removeprefix("__tag__:")
    raise PackagingError(f"bentoml build printed no tag: {result.stdout[-200:]}")


def _bentofile_with(scratch: Path, base_image: str | None) -> Path:
    if base_image is None:
        return BENTOFILE
    config = yaml.safe_load(BENTOFILE.read_text(encoding="utf-8"))
    docker = config.setdefault("docker", {})
    docker.pop("distro", None)
    docker.pop("python_version", None)
    docker["base_image"] = base_image
    # bentoml resolves relative paths against the build context, so the copy can live elsewhere.
    path = scratch / "bentofile.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


def _bentoml_name(name: str) -> str:
    """BentoML tags are lower-case letters, digits, '-', '_' and '.'."""
    cleaned = re.sub(r"[^a-z0-9._-]+", "-", name.lower()).strip("-._")
    if not cleaned:
        raise PackagingError(f"cannot derive a BentoML model name from {name!r}")
    return cleaned


def _refuse_store_inside_project() -> None:
    """`bentoml build` copies the project; a store inside it would be copied into itself."""
    home = Path(os.environ.get("BENTOML_HOME", Path.home() / "bentoml")).resolve()
    if home.is_relative_to(PROJECT_ROOT):
        raise PackagingError(f"BENTOML_HOME ({home}) must be outside the project folder {PROJECT_ROOT}")
