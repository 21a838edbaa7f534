"""skaffold.yaml cannot run here (no skaffold binary, no cluster) and no published schema ships in a
package, so its structure is checked against what skaffold and the rest of the project expect:
custom builds through `tabula images`, a Helm deploy of charts/tabula whose value keys exist,
the dev / canary / blue-green profiles, and the port-forward to the service."""

import copy
import json
import re
from typing import Any

import pytest
import typer
import yaml
from typer.testing import CliRunner

from cli.images import register
from tests.support import REPO_ROOT

pytestmark = pytest.mark.unit

CHART = REPO_ROOT / "charts" / "tabula"
PROFILE_STRATEGIES = {"dev": "rollingUpdate", "canary": "canary", "blue-green": "blueGreen"}
ARTIFACTS = {"tabula-service": "service", "tabula-training": "training"}


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((REPO_ROOT / "skaffold.yaml").read_text())
    return loaded


def _pointer(document: Any, path: str) -> tuple[Any, str]:
    """The parent container and last token of a JSON pointer (RFC 6901) that must exist."""
    tokens = [token.replace("~1", "/").replace("~0", "~") for token in path.lstrip("/").split("/")]
    parent = document
    for token in tokens[:-1]:
        parent = parent[int(token)] if isinstance(parent, list) else parent[token]
    assert (int(tokens[-1]) < len(parent)) if isinstance(parent, list) else (tokens[-1] in parent), path
    return parent, tokens[-1]


def _with_profile(config: dict[str, Any], name: str) -> dict[str, Any]:
    [profile] = [p for p in config["profiles"] if p["name"] == name]
    result = copy.deepcopy(config)
    for patch in profile["patches"]:
        assert patch["op"] == "replace"
        parent, key = _pointer(result, patch["path"])
        parent[key] = patch["value"]
    return result


def _chart_value(values: dict[str, Any], dotted: str) -> Any:
    node: Any = values
    for key in dotted.split("."):
        node = node[key]
    return node


def test_config_header(config: dict[str, Any]) -> None:
    assert config["apiVersion"] == "skaffold/v4beta11"
    assert config["kind"] == "Config"


def test_both_images_are_built_by_the_projects_command(config: dict[str, Any]) -> None:
    artifacts = {artifact["image"]: artifact for artifact in config["build"]["artifacts"]}
    assert artifacts.keys() == ARTIFACTS.keys()
    for image, which in ARTIFACTS.items():
        custom = artifacts[image]["custom"]
        assert f"tabula images --only {which} --skaffold" in custom["buildCommand"]
        for pattern in custom["dependencies"]["paths"]:
            assert list(REPO_ROOT.glob(pattern)), f"{image}: {pattern} matches nothing"
    assert config["build"]["local"]["push"] is False


def test_the_build_command_line_is_accepted_by_tabula_images(config: dict[str, Any]) -> None:
    """Runs each artifact's `tabula images` arguments through the real CLI, without $IMAGE set:
    the options parse and the command stops at skaffold's missing contract variable."""
    app = typer.Typer()
    register(app)
    app.callback()(lambda: None)
    for artifact in config["build"]["artifacts"]:
        command = artifact["custom"]["buildCommand"]
        match = re.search(r"tabula (images [^\"&]*)", command)
        assert match, command
        result = CliRunner().invoke(app, match.group(1).split(), env={"IMAGE": None})
        # A usage mistake, but the command's own: the options parsed.
        assert result.exit_code == 2, result.output
        assert result.output == "error: --skaffold expects $IMAGE (set by skaffold's custom build)\n"
        assert "--skaffold expects $IMAGE" in result.output


def test_tags_follow_model_version_and_git_sha(config: dict[str, Any]) -> None:
    policy = config["build"]["tagPolicy"]["customTemplate"]
    assert policy["template"] == "{{.MODEL_VERSION}}-{{.GIT_SHA}}"
    components = {component["name"]: component for component in policy["components"]}
    assert "TABULA_MODEL_VERSION" in components["MODEL_VERSION"]["envTemplate"]["template"]
    assert components["GIT_SHA"]["gitCommit"]["variant"] == "AbbrevCommitSha"


def test_helm_release_sets_image_values_the_chart_has(config: dict[str, Any]) -> None:
    [release] = config["deploy"]["helm"]["releases"]
    assert release["name"] == "tabula"
    assert release["namespace"] == "tabula"
    assert (REPO_ROOT / release["chartPath"] / "Chart.yaml").exists()
    values = yaml.safe_load((REPO_ROOT / release["chartPath"] / "values.yaml").read_text())
    for key, template in release["setValueTemplates"].items():
        _chart_value(values, key)
        image = "tabula_service" if key.startswith("image.") else "tabula_training"
        field = "REPO" if key.endswith("repository") else "TAG"
        assert template == f"{{{{.IMAGE_{field}_{image}}}}}"
    for key in release["setValues"]:
        _chart_value(values, key)


@pytest.mark.parametrize(("profile", "strategy"), PROFILE_STRATEGIES.items())
def test_profiles_choose_the_rollout_strategy(config: dict[str, Any], profile: str, strategy: str) -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    allowed = schema["properties"]["rollout"]["properties"]["strategy"]["enum"]
    patched = _with_profile(config, profile)
    assert patched["deploy"]["helm"]["releases"][0]["setValues"]["rollout.strategy"] == strategy
    assert strategy in allowed


def test_dev_profile_is_the_one_skaffold_dev_activates(config: dict[str, Any]) -> None:
    [dev] = [p for p in config["profiles"] if p["name"] == "dev"]
    assert dev["activation"] == [{"command": "dev"}]


def test_port_forward_reaches_the_service_on_loopback(config: dict[str, Any]) -> None:
    [forward] = config["portForward"]
    assert forward == {
        "resourceType": "service",
        "resourceName": "tabula",
        "namespace": "tabula",
        "port": 3000,
        "address": "127.0.0.1",
        "localPort": 3000,
    }


def test_a_broken_profile_path_is_detected(config: dict[str, Any]) -> None:
    """Guards the patch check above: a path that does not exist in the config must not pass."""
    broken = copy.deepcopy(config)
    broken["profiles"][1]["patches"][0]["path"] = "/deploy/helm/releases/0/setValues/rollout.stratgy"
    with pytest.raises(AssertionError):
        _with_profile(broken, broken["profiles"][1]["name"])
