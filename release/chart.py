"""What the chart's values say about the workload: object names, strategy, and which version serves."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

CHART_NAME = "tabula"
COLORS = ("blue", "green")


def dig(values: dict[str, Any], dotted: str, default: Any = None) -> Any:
    """``values['a']['b']`` for ``'a.b'``, or ``default`` when a level is missing."""
    node: Any = values
    for key in dotted.split("."):
        if not isinstance(node, dict) or key not in node:
            return default
        node = node[key]
    return node


def nested(dotted: str, value: Any) -> dict[str, Any]:
    """``{'a': {'b': value}}`` for ``'a.b'``."""
    result: dict[str, Any] = {}
    node = result
    *parents, last = dotted.split(".")
    for key in parents:
        node = node.setdefault(key, {})
    node[last] = value
    return result


def merge(*layers: dict[str, Any]) -> dict[str, Any]:
    """Deep merge, later layers win (Helm's rule for maps)."""
    result: dict[str, Any] = {}
    for layer in layers:
        for key, value in layer.items():
            if isinstance(value, dict) and isinstance(result.get(key), dict):
                result[key] = merge(result[key], value)
            else:
                result[key] = value
    return result


def fullname(values: dict[str, Any], release: str) -> str:
    """The chart's ``tabula.fullname``: the prefix of every object name."""
    override = str(values.get("fullnameOverride") or "")
    if override:
        return override[:63].rstrip("-")
    name = str(values.get("nameOverride") or "") or CHART_NAME
    full = release if name in release else f"{release}-{name}"
    return full[:63].rstrip("-")


def suffixed(values: dict[str, Any], release: str, suffix: str) -> str:
    """The chart's ``tabula.suffixed``: full name and suffix within 63 characters."""
    limit = 62 - len(suffix)
    return f"{fullname(values, release)[:limit].rstrip('-')}-{suffix}"


def version_of_tag(tag: str) -> str:
    """Model version of an image tag ``<model-version>-<git-sha>``."""
    return tag.split("-", 1)[0]


@dataclass(frozen=True)
class Workload:
    """The serving side of a release, read from its computed values."""

    strategy: str
    provider: str
    name: str
    image_repository: str
    image_tag: str
    model_version: str

    @property
    def argo(self) -> bool:
        return self.strategy != "rollingUpdate" and self.provider == "argo"

    @property
    def native(self) -> bool:
        return self.strategy != "rollingUpdate" and self.provider == "native"

    @property
    def mode(self) -> str:
        return self.strategy if self.strategy == "rollingUpdate" else f"{self.strategy}/{self.provider}"


def workload(values: dict[str, Any], release: str) -> Workload:
    """The workload and the version its users are served (the stable track / active colour)."""
    strategy = str(dig(values, "rollout.strategy", "rollingUpdate"))
    provider = str(dig(values, "rollout.provider", "argo"))
    tag = str(dig(values, "image.tag") or "")
    if strategy == "blueGreen" and provider == "native":
        active = str(dig(values, "rollout.native.blueGreen.activeColor", "blue"))
        tag = str(dig(values, f"rollout.native.blueGreen.{active}Tag") or tag)
        version = version_of_tag(tag)
    else:
        version = str(dig(values, "model.version") or "") or version_of_tag(tag)
    return Workload(
        strategy=strategy,
        provider=provider,
        name=fullname(values, release),
        image_repository=str(dig(values, "image.repository", "")),
        image_tag=tag,
        model_version=version,
    )


def split_image(ref: str) -> tuple[str, str]:
    """``registry/name:tag`` -> (``registry/name``, ``tag``)."""
    repository, sep, tag = ref.rpartition(":")
    if not sep or "/" in tag or not repository:
        raise ValueError(f"image reference {ref!r} has no tag")
    return repository, tag
