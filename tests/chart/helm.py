"""Helpers of the chart tests: locate tools, render the chart, validate rendered objects offline."""

from __future__ import annotations

import copy
import functools
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from tests.support import unavailable

REPO_ROOT = Path(__file__).resolve().parents[2]
CHART_DIR = REPO_ROOT / "charts" / "tabula"
SCENARIO_DIR = CHART_DIR / "ci"
CRD_DIR = REPO_ROOT.parent / "shared" / "crds"
INSTALL_HELM = REPO_ROOT / "scripts" / "install-helm.sh"
RELEASE = "tabula"
NAMESPACE = "prod"
KUBERNETES_VERSIONS = ("1.30", "1.31", "1.32", "1.33", "1.34", "1.35")

Manifest = dict[str, Any]


@functools.cache
def _helm_path() -> str:
    result = subprocess.run(["bash", str(INSTALL_HELM)], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        return ""
    return result.stdout.strip().splitlines()[-1]


def helm_binary() -> str:
    """helm from PATH, or installed into .tools/bin by scripts/install-helm.sh."""
    path = _helm_path()
    if not path or not Path(path).exists():
        unavailable("helm is not available and scripts/install-helm.sh could not install it")
    return path


def promtool_binary() -> str:
    path = shutil.which("promtool")
    if path is None:
        unavailable("promtool is not installed (Debian package 'prometheus')")
        raise AssertionError("unreachable")
    return path


def scenarios() -> list[str]:
    """Scenario names, from charts/tabula/ci/<name>-values.yaml."""
    return sorted(p.name.removesuffix("-values.yaml") for p in SCENARIO_DIR.glob("*-values.yaml"))


def scenario_file(name: str) -> Path:
    return SCENARIO_DIR / f"{name}-values.yaml"


def run_helm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([helm_binary(), *args], capture_output=True, text=True, check=False, timeout=120)


def render(values_files: list[Path], set_values: list[str] | None = None) -> subprocess.CompletedProcess[str]:
    args = ["template", RELEASE, str(CHART_DIR), "--namespace", NAMESPACE]
    for values_file in values_files:
        args += ["--values", str(values_file)]
    for item in set_values or []:
        args += ["--set", item]
    return run_helm(*args)


@dataclass
class Rendered:
    """All objects of one `helm template` run."""

    scenario: str
    objects: list[Manifest]
    values: dict[str, Any] = field(default_factory=dict)

    def of_kind(self, kind: str) -> list[Manifest]:
        return [o for o in self.objects if o["kind"] == kind]

    def one(self, kind: str, name: str | None = None) -> Manifest:
        found = [o for o in self.of_kind(kind) if name is None or o["metadata"]["name"] == name]
        assert len(found) == 1, f"{self.scenario}: expected one {kind} {name or ''}, found {len(found)}"
        return found[0]

    def kinds(self) -> set[str]:
        return {o["kind"] for o in self.objects}


def render_scenario(name: str) -> Rendered:
    result = render([scenario_file(name)])
    assert result.returncode == 0, f"helm template failed for {name}:\n{result.stderr}"
    objects = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    values = merged_values(name)
    return Rendered(scenario=name, objects=objects, values=values)


def merged_values(name: str) -> dict[str, Any]:
    """Chart defaults overlaid with the scenario file (helm's merge: maps merge, everything else replaces)."""

    def merge(base: Any, overlay: Any) -> Any:
        if isinstance(base, dict) and isinstance(overlay, dict):
            merged = dict(base)
            for key, value in overlay.items():
                merged[key] = merge(base.get(key), value)
            return merged
        return copy.deepcopy(overlay)

    defaults = yaml.safe_load((CHART_DIR / "values.yaml").read_text())
    overlay = yaml.safe_load(scenario_file(name).read_text()) or {}
    result: dict[str, Any] = merge(defaults, overlay)
    return result


def walk(node: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    """Every (path, value) pair of a nested structure."""
    yield path, node
    if isinstance(node, dict):
        for key, value in node.items():
            yield from walk(value, f"{path}.{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from walk(value, f"{path}[{index}]")


# --- CRD schemas -------------------------------------------------------------------------------------


def _strict(schema: Any) -> Any:
    """Close every object schema that lists its properties, like the API server's strict field validation."""
    if isinstance(schema, dict):
        closed = {key: _strict(value) for key, value in schema.items()}
        if (
            closed.get("type") == "object"
            and "properties" in closed
            and "additionalProperties" not in closed
            and not closed.get("x-kubernetes-preserve-unknown-fields")
        ):
            closed["additionalProperties"] = False
        return closed
    if isinstance(schema, list):
        return [_strict(item) for item in schema]
    return schema


@functools.cache
def crd_validators() -> dict[tuple[str, str], jsonschema.protocols.Validator]:
    """(apiVersion, kind) -> validator of the CRD's openAPIV3Schema, for every CRD in ../shared/crds."""
    if not CRD_DIR.is_dir():
        unavailable(f"CRD folder {CRD_DIR} is missing (CI checks out ../shared beside the repository)")
    validators: dict[tuple[str, str], jsonschema.protocols.Validator] = {}
    for path in sorted(CRD_DIR.glob("*.yaml")):
        for crd in yaml.safe_load_all(path.read_text()):
            if not crd or crd.get("kind") != "CustomResourceDefinition":
                continue
            group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
            for version in crd["spec"]["versions"]:
                schema = _strict(version["schema"]["openAPIV3Schema"])
                validator_class = jsonschema.validators.validator_for(
                    schema, default=jsonschema.Draft7Validator
                )
                validators[(f"{group}/{version['name']}", kind)] = validator_class(schema)
    return validators


def crd_errors(manifest: Manifest) -> list[str]:
    validator = crd_validators().get((manifest["apiVersion"], manifest["kind"]))
    assert validator is not None, f"no CRD schema for {manifest['apiVersion']} {manifest['kind']}"
    return [
        f"{'.'.join(str(p) for p in error.absolute_path)}: {error.message}"
        for error in validator.iter_errors(manifest)
    ]
