"""The worker's edge: requests the prediction app answers itself skip the server's app, on a real uvicorn."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest
import uvicorn
import uvicorn.config
from starlette.types import Receive, Scope, Send

from service import edge
from service.edge import UVICORN_AUTO_HTTP, Edge, EdgeProtocol, install

pytestmark = [pytest.mark.unit, pytest.mark.anyio]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Named:
    """An ASGI app answering ``<name> <method> <path>`` as plain text."""

    def __init__(self, name: str) -> None:
        self.name = name

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = f"{self.name} {scope['method']} {scope['path']}".encode()
        headers = [(b"content-length", b"%d" % len(body))]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})


class Direct(Named):
    """Answers POST /predict and the /v2 paths by itself, as service.app.TabulaApp does."""

    def answers_directly(self, method: str, path: str) -> bool:
        return (method == "POST" and path == "/predict") or path.startswith("/v2/")


@pytest.fixture
def uvicorn_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """uvicorn's protocol registry and the edge's app as they were, after the test."""
    registry = uvicorn.config.HTTP_PROTOCOLS
    monkeypatch.setitem(registry, UVICORN_AUTO_HTTP, registry[UVICORN_AUTO_HTTP])
    monkeypatch.setattr(edge, "_direct", None)


@asynccontextmanager
async def serving(app: Named) -> AsyncIterator[tuple[uvicorn.Server, httpx.AsyncClient]]:
    """A real uvicorn server on a free local port (its default HTTP protocol), with a client."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    config = uvicorn.Config(app, lifespan="off", log_config=None, loop="asyncio")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[listener]))
    while not server.started:
        await asyncio.sleep(0.01)
    port = listener.getsockname()[1]
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            yield server, client
    finally:
        server.should_exit = True
        await task
        listener.close()


def test_install_makes_the_edge_uvicorns_default_http_protocol(uvicorn_registry: None) -> None:
    install(Direct("direct"))
    config = uvicorn.Config(Named("server"), log_config=None)
    config.load()
    assert config.http_protocol_class is EdgeProtocol


async def test_requests_the_app_answers_itself_skip_the_servers_app(uvicorn_registry: None) -> None:
    install(Direct("direct"))
    async with serving(Named("server")) as (server, client):
        answers = {
            (method, path): (await client.request(method, path)).text
            for method, path in [
                ("POST", "/predict"),
                ("GET", "/predict"),
                ("GET", "/v2/health/ready"),
                ("GET", "/livez"),
                ("POST", "/other"),
            ]
        }
        async with httpx.AsyncClient(base_url=client.base_url) as second:
            assert (await second.post("/predict")).text == "direct POST /predict"
            apps = [getattr(protocol, "app", None) for protocol in server.server_state.connections]
    assert answers == {
        ("POST", "/predict"): "direct POST /predict",
        ("GET", "/predict"): "server GET /predict",
        ("GET", "/v2/health/ready"): "direct GET /v2/health/ready",
        ("GET", "/livez"): "server GET /livez",
        ("POST", "/other"): "server POST /other",
    }
    # Two connections, one edge: it is built once per server app, not per connection.
    assert len(apps) == 2
    assert isinstance(apps[0], Edge)
    assert apps[0] is apps[1]


async def test_without_a_direct_app_the_protocol_runs_the_servers_app(uvicorn_registry: None) -> None:
    uvicorn.config.HTTP_PROTOCOLS[UVICORN_AUTO_HTTP] = edge.PROTOCOL_PATH
    async with serving(Named("server")) as (_, client):
        assert (await client.post("/predict")).text == "server POST /predict"
