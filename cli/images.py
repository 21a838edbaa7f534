"""``tabula images``: build (and optionally push) the service and training images.

The build itself is :func:`release.images.build_images`, the one image builder the release loop uses too.
"""

from pathlib import Path
from typing import Annotated

import typer

from cli.exits import handle_errors
from release.images import (
    DEFAULT_BASE_IMAGE,
    DEFAULT_BENTO_NAME,
    DEFAULT_REGISTRY,
    MODEL_VERSION_LABEL,
    Backend,
    BuildOptions,
    Which,
    build_images,
)


@handle_errors
def images(
    backend: Annotated[
        Backend,
        typer.Option(envvar="TABULA_IMAGES_BACKEND", help="Program that builds (and pushes) the images."),
    ] = Backend.docker,
    registry: Annotated[
        str,
        typer.Option(
            envvar="TABULA_IMAGES_REGISTRY",
            help="Registry prefix of both images (`localhost` for local builds).",
        ),
    ] = DEFAULT_REGISTRY,
    only: Annotated[Which, typer.Option(help="Build only one of the images.")] = Which.all,
    bento: Annotated[
        str | None,
        typer.Option(help=f"Bento tag to containerize; default: the newest `{DEFAULT_BENTO_NAME}` Bento."),
    ] = None,
    model_version: Annotated[
        str | None,
        typer.Option(help=f"Model version in the tag; default: the Bento's `{MODEL_VERSION_LABEL}` label."),
    ] = None,
    git_sha: Annotated[str | None, typer.Option(help="Commit id in the tag; default: git HEAD.")] = None,
    image: Annotated[
        str | None,
        typer.Option(help="Exact reference for the one image chosen with --only (overrides the tag)."),
    ] = None,
    skaffold: Annotated[
        bool,
        typer.Option(
            help="Skaffold custom build: take the reference from $IMAGE and push if $PUSH_IMAGE=true."
        ),
    ] = False,
    base_image: Annotated[
        str,
        typer.Option(
            envvar="TABULA_IMAGES_BASE_IMAGE",
            help="Base image of the training image (Debian-based, Python 3.11).",
        ),
    ] = DEFAULT_BASE_IMAGE,
    ca_bundle: Annotated[
        Path | None,
        typer.Option(
            envvar="TABULA_IMAGES_CA_BUNDLE",
            exists=True,
            dir_okay=False,
            help="Extra CA bundle (PEM): trusted by the builds, and at run time by the training image.",
        ),
    ] = None,
    network: Annotated[
        str | None,
        typer.Option(
            envvar="TABULA_IMAGES_NETWORK", help="Network mode of the build containers, e.g. `host`."
        ),
    ] = None,
    extra_tag: Annotated[
        list[str] | None, typer.Option(help="Another tag for the built images, e.g. the release version.")
    ] = None,
    push: Annotated[bool, typer.Option(help="Push the images (every tag) after building them.")] = False,
) -> None:
    """Build the service image (from the Bento) and the training image, tagged <model-version>-<git-sha>."""
    refs = build_images(
        backend=backend,
        registry=registry,
        only=only,
        bento=bento,
        model_version=model_version,
        git_sha=git_sha,
        image=image,
        skaffold=skaffold,
        options=BuildOptions(backend=backend, base_image=base_image, ca_bundle=ca_bundle, network=network),
        extra_tags=extra_tag or [],
        push=push,
    )
    for ref in refs:
        typer.echo(ref)


def register(app: typer.Typer) -> None:
    """Add this module's commands to the root CLI."""
    app.command("images")(images)
