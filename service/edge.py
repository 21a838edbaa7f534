"""The worker's HTTP edge: prediction requests go from uvicorn straight to the prediction app.

BentoML gives uvicorn its own ASGI app, and every request passes all of its layers: uvicorn's
ProxyHeadersMiddleware, Starlette's ServerErrorMiddleware, OpenTelemetry's middleware (which still
parses every URL with tracing off), BentoML's TimeoutMiddleware (a timer per request, and a second
task that runs the rest: ``asyncio.ensure_future`` in bentoml/_internal/server/http/traffic.py),
BentoML's ContextMiddleware, Starlette's ExceptionMiddleware and router, whose routes are tried in
turn until BentoML's PassiveMount finds the prediction app. py-spy put 14 % of a single-row worker's
samples in those layers at 32 connections, and 31 % at 1,024, where most requests are refused: a
refusal paid every layer too.

The prediction app (:class:`service.app.TabulaApp`) answers its prediction routes and the Open
Inference Protocol's ``/v2`` paths itself: it routes them, bounds their time, catches every fault
and counts every answer. So :class:`Edge` sends those requests to it directly, and every other
request (BentoML's /livez, /readyz, /docs, the app's other routes) to BentoML's app, as before.

uvicorn makes each connection's protocol from ``uvicorn.config.HTTP_PROTOCOLS["auto"]`` when no
``http`` is configured, and BentoML's worker configures none. :func:`install` points that entry at
:class:`EdgeProtocol`, uvicorn's httptools protocol whose app is the edge.
"""

from __future__ import annotations

import asyncio
from functools import cache
from typing import Any, Protocol

from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.config import HTTP_PROTOCOLS, Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

# uvicorn's name of the HTTP protocol a server gets when none is configured, and where ours is found.
UVICORN_AUTO_HTTP = "auto"
PROTOCOL_PATH = f"{__name__}:EdgeProtocol"


class DirectApp(Protocol):
    """An ASGI app that says which requests it answers by itself, without the server's stack."""

    def answers_directly(self, method: str, path: str) -> bool: ...

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None: ...

    def __hash__(self) -> int: ...


class Edge:
    """The app uvicorn runs: requests ``direct`` answers by itself go to it, all others to ``app``."""

    __slots__ = ("app", "direct")

    def __init__(self, app: ASGIApp, direct: DirectApp) -> None:
        self.app = app
        self.direct = direct

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.direct.answers_directly(scope["method"], scope["path"]):
            await self.direct(scope, receive, send)
        else:
            await self.app(scope, receive, send)


# Set by install(): the app that answers prediction requests in this process.
_direct: DirectApp | None = None


@cache
def _edge(app: ASGIApp, direct: DirectApp) -> Edge:
    """One edge per server app: every connection of a server shares it."""
    return Edge(app, direct)


class EdgeProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, running :class:`Edge` around the server's app."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        if _direct is not None:
            self.app = _edge(self.app, _direct)


def install(direct: DirectApp) -> None:
    """Make uvicorn's default HTTP protocol :class:`EdgeProtocol` here, with ``direct`` behind the edge."""
    global _direct
    _direct = direct
    HTTP_PROTOCOLS[UVICORN_AUTO_HTTP] = PROTOCOL_PATH
