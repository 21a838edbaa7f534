"""Service commands of the ``housing`` CLI (packaging, serving, images).

Heavy libraries (mlflow, bentoml) are imported inside the commands so ``housing --help`` stays fast.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from training.exits import fail

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODEL_NAME = "housing-price"
DEFAULT_ALIAS = "production"
# Exit code of registry/MLflow/packaging failures, as in the rest of the ``housing`` CLI.
EXIT_PACKAGING = 4
EXIT_USAGE = 2


def build(
    model_name: Annotated[
        str, typer.Option("--model-name", envvar="HOUSING_MODEL_NAME", help="Registered MLflow model.")
    ] = DEFAULT_MODEL_NAME,
    ref: Annotated[str | None, typer.Option("--ref", help="Alias or version number to package.")] = None,
    version: Annotated[str | None, typer.Option("--version", help="Registry version to package.")] = None,
    alias: Annotated[str | None, typer.Option("--alias", help="Registry alias to package.")] = None,
) -> None:
    """Package a registered model (default: the production alias) into a Bento; prints the Bento tag.

    The MLflow server is the one in MLFLOW_TRACKING_URI.
    """
    chosen = [value for value in (ref, version, alias) if value is not None]
    if len(chosen) > 1:
        raise fail("give at most one of --ref, --version and --alias", EXIT_USAGE)
    if version is not None and not version.isdigit():
        raise fail(f"--version must be a number, got {version!r}", EXIT_USAGE)
    from service.packaging import PackagingError, build_bento

    try:
        tag = build_bento(
            model_name, chosen[0] if chosen else DEFAULT_ALIAS, os.environ.get("MLFLOW_TRACKING_URI")
        )
    except PackagingError as error:
        raise fail(str(error), EXIT_PACKAGING) from None
    typer.echo(tag)


def serve(
    bento: Annotated[
        str | None, typer.Option("--bento", help="Bento tag to serve (default: the newest housing Bento).")
    ] = None,
    model_tag: Annotated[
        str | None,
        typer.Option(
            "--model-tag", help="Serve the working tree's service with this BentoML model tag instead."
        ),
    ] = None,
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port to listen on.")] = 3000,
) -> None:
    """Serve the prediction service with ``bentoml serve`` (this process becomes the server)."""
    if bento is not None and model_tag is not None:
        raise fail("give either --bento or --model-tag", EXIT_USAGE)
    command = [sys.executable, "-m", "bentoml", "serve"]
    if model_tag is not None:
        command += [
            "service.service:HousingService",
            "--working-dir",
            str(PROJECT_ROOT),
            "--arg",
            f"model_tag={model_tag}",
        ]
    else:
        command.append(bento or "housing:latest")
    command += ["--host", host, "--port", str(port)]
    os.execv(sys.executable, command)  # noqa: S606 - replaces this process so signals reach the server


def register(app: typer.Typer) -> None:
    """Add this package's commands to the root CLI."""
    app.command("build")(build)
    app.command("serve")(serve)
