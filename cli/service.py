"""Service commands of the ``tabula`` CLI: ``build`` (a Bento) and ``serve``.

Heavy libraries (mlflow, bentoml) are imported inside the commands so ``tabula --help`` stays fast.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from cli.exits import handle_errors
from contracts.errors import ConfigError

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODEL_NAME = "housing-price"
DEFAULT_ALIAS = "production"


@handle_errors
def build(
    model_name: Annotated[
        str, typer.Option("--model-name", envvar="TABULA_MODEL_NAME", help="Registered MLflow model.")
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
        raise ConfigError("give at most one of --ref, --version and --alias")
    if version is not None and not version.isdigit():
        raise ConfigError(f"--version must be a number, got {version!r}")
    from service.packaging import build_bento

    # A PackagingError (exit 4) leaves through handle_errors.
    tag = build_bento(
        model_name, chosen[0] if chosen else DEFAULT_ALIAS, os.environ.get("MLFLOW_TRACKING_URI")
    )
    typer.echo(tag)


@handle_errors
def serve(
    bento: Annotated[
        str | None, typer.Option("--bento", help="Bento tag to serve (default: the newest tabula Bento).")
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
        raise ConfigError("give either --bento or --model-tag")
    command = [sys.executable, "-m", "bentoml", "serve"]
    if model_tag is not None:
        command += [
            "service.service:TabulaService",
            "--working-dir",
            str(PROJECT_ROOT),
            "--arg",
            f"model_tag={model_tag}",
        ]
    else:
        command.append(bento or "tabula:latest")
    command += ["--host", host, "--port", str(port)]
    os.execv(sys.executable, command)  # noqa: S606 - replaces this process so signals reach the server


def register(app: typer.Typer) -> None:
    """Add this package's commands to the root CLI."""
    app.command("build")(build)
    app.command("serve")(serve)
