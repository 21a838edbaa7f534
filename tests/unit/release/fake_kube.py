"""A FAKE Kubernetes API server: the REST paths the release package calls, served from a dict.

Not a mock of the client: the real ``kubernetes`` client talks HTTP to it through a generated
kubeconfig. Every request is recorded (method, path, query, decoded body, content type) so tests
assert on exactly what was sent. Objects live at their REST path; collections are derived from them.
"""

from __future__ import annotations

import base64
import copy
import gzip
import json
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import yaml


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    body: Any
    content_type: str | None


Response = tuple[int, Any]
Hook = Callable[[Request], Response | None]


def status_body(code: int, reason: str, message: str) -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "reason": reason,
        "message": message,
        "code": code,
    }


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def json_patch(target: dict[str, Any], operations: list[dict[str, Any]]) -> dict[str, Any]:
    """The ``replace``/``add`` operations of RFC 6902, enough for the client code under test."""
    result = copy.deepcopy(target)
    for operation in operations:
        assert operation["op"] in {"replace", "add"}, operation
        *parents, last = operation["path"].lstrip("/").split("/")
        node = result
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = copy.deepcopy(operation["value"])
    return result


class FakeKube:
    """State and recording of the fake API server."""

    def __init__(self) -> None:
        self.objects: dict[str, Any] = {}
        self.sequences: dict[str, list[Any]] = {}
        self.failures: dict[tuple[str, str], tuple[int, str]] = {}
        self.hooks: list[Hook] = []
        self.logs: dict[str, str] = {}
        self.requests: list[Request] = []
        self.lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    # --- test helpers ----------------------------------------------------------------------
    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def put(self, path: str, obj: dict[str, Any]) -> dict[str, Any]:
        obj = copy.deepcopy(obj)
        obj.setdefault("metadata", {}).setdefault("uid", str(uuid.uuid4()))
        self.objects[path] = obj
        return obj

    def fail(self, method: str, path_prefix: str, code: int, message: str) -> None:
        self.failures[(method, path_prefix)] = (code, message)

    def serve_group(self, group_version: str, kinds: dict[str, str]) -> None:
        """Discovery document of a custom API group: ``{kind: plural}``."""
        self.objects[f"/apis/{group_version}"] = {
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": group_version,
            "resources": [
                {
                    "name": plural,
                    "singularName": kind.lower(),
                    "namespaced": True,
                    "kind": kind,
                    "verbs": ["get"],
                }
                for kind, plural in kinds.items()
            ],
        }

    def install_helm_release(
        self, name: str, revision: int, chart_values: dict[str, Any], user_values: dict[str, Any]
    ) -> None:
        """A Helm release record (a ``helm.sh/release.v1`` Secret) the REAL helm binary reads back."""
        record = {
            "name": name,
            "namespace": "tabula",
            "version": revision,
            "info": {"status": "deployed"},
            "chart": {
                "metadata": {"name": "tabula", "version": "0.1.0", "apiVersion": "v2"},
                "values": chart_values,
            },
            "config": user_values,
            "manifest": "",
        }
        payload = base64.b64encode(gzip.compress(json.dumps(record).encode()))
        secret = f"sh.helm.release.v1.{name}.v{revision}"
        self.objects["/version"] = {
            "major": "1",
            "minor": "32",
            "gitVersion": "v1.32.0",
            "platform": "linux/amd64",
        }
        self.put(
            f"/api/v1/namespaces/tabula/secrets/{secret}",
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "type": "helm.sh/release.v1",
                "metadata": {
                    "name": secret,
                    "labels": {"name": name, "owner": "helm", "status": "deployed", "version": str(revision)},
                },
                "data": {"release": base64.b64encode(payload).decode()},
            },
        )

    def made(self, method: str | None = None, path_part: str = "") -> list[Request]:
        return [
            request
            for request in self.requests
            if (method is None or request.method == method) and path_part in request.path
        ]

    def write_kubeconfig(self, path: Path, context: str = "fake") -> Path:
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": "tester", "user": {"token": "fake-token"}}],
            "contexts": [
                {"name": context, "context": {"cluster": "fake", "user": "tester", "namespace": "tabula"}}
            ],
            "current-context": context,
        }
        path.write_text(yaml.safe_dump(config))
        return path

    # --- server ----------------------------------------------------------------------------
    def start(self) -> None:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                del format, args

            def _handle(self) -> None:
                parts = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                body = json.loads(raw) if raw else None
                request = Request(
                    self.command, parts.path, parse_qs(parts.query), body, self.headers.get("Content-Type")
                )
                with fake.lock:
                    fake.requests.append(request)
                    code, payload = fake.respond(request)
                if isinstance(payload, str):
                    data, kind = payload.encode(), "text/plain"
                else:
                    data, kind = json.dumps(payload).encode(), "application/json"
                self.send_response(code)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle  # noqa: N815 - http.server's names

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    # --- routing ---------------------------------------------------------------------------
    def respond(self, request: Request) -> Response:
        for (method, prefix), (code, message) in self.failures.items():
            if method in {request.method, "*"} and request.path.startswith(prefix):
                reason = {401: "Unauthorized", 403: "Forbidden", 404: "NotFound"}.get(code, "InternalError")
                return code, status_body(code, reason, message)
        for hook in self.hooks:
            if (answer := hook(request)) is not None:
                return answer
        path = request.path
        if request.method == "GET":
            return self._get(request)
        if request.method == "POST":
            name = request.body["metadata"]["name"]
            target = f"{path}/{name}"
            if target in self.objects:
                return 409, status_body(
                    409, "AlreadyExists", f'{path.rsplit("/", 1)[-1]} "{name}" already exists'
                )
            return 201, self.put(target, request.body)
        if request.method == "PUT":
            return 200, self.put(path, request.body)
        if request.method == "PATCH":
            target = path.removesuffix("/status")
            if target not in self.objects:
                return 404, status_body(404, "NotFound", f"{target} not found")
            if request.content_type == "application/json-patch+json":
                self.objects[target] = json_patch(self.objects[target], request.body)
            else:
                self.objects[target] = merge_patch(self.objects[target], request.body)
            return 200, self.objects[target]
        if request.method == "DELETE":
            self.objects.pop(path, None)
            return 200, {"kind": "Status", "apiVersion": "v1", "status": "Success"}
        return 405, status_body(405, "MethodNotAllowed", request.method)

    def _get(self, request: Request) -> Response:
        path = request.path
        if path in self.sequences:
            sequence = self.sequences[path]
            current = sequence.pop(0) if len(sequence) > 1 else sequence[0]
            self.objects[path] = merge_patch(self.objects.get(path, {}), current)
            return 200, self.objects[path]
        if path in self.objects:
            return 200, self.objects[path]
        if path.endswith("/log"):
            pod = path.split("/")[-2]
            return (200, self.logs[pod]) if pod in self.logs else (404, status_body(404, "NotFound", pod))
        prefix = path + "/"
        items = [
            obj
            for key, obj in sorted(self.objects.items())
            if key.startswith(prefix) and "/" not in key[len(prefix) :]
        ]
        selector = request.query.get("labelSelector", [""])[0]
        wanted = dict(pair.split("=", 1) for pair in selector.split(",") if pair)
        items = [obj for obj in items if wanted.items() <= obj.get("metadata", {}).get("labels", {}).items()]
        if items or path.rsplit("/", 1)[-1] in COLLECTIONS:
            # Typed clients (helm's client-go) want the list kind of the items, e.g. SecretList.
            kind = f"{items[0]['kind']}List" if items and "kind" in items[0] else "List"
            return 200, {
                "kind": kind,
                "apiVersion": "v1",
                "metadata": {"resourceVersion": "1"},
                "items": items,
            }
        return 404, status_body(404, "NotFound", f"the server could not find the requested resource ({path})")


COLLECTIONS = {
    "pods",
    "jobs",
    "configmaps",
    "deployments",
    "replicasets",
    "analysisruns",
    "rollouts",
    "serviceaccounts",
    "roles",
    "rolebindings",
    "secrets",
}
