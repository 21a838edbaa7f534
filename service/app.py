"""The prediction API's ASGI app, built for one model contract.

:func:`build_app` takes the request and response models of the served model's contract (so OpenAPI
and ``/docs`` show its real fields) and a function returning the worker's :class:`PredictionAPI`
(``None`` while no model is loaded). :mod:`service.service` builds it under BentoML; tests build it
around a prediction API of their own and call it in-process.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from functools import cache, cached_property
from typing import Any

from fastapi import FastAPI, Request
from pydantic import BaseModel
from starlette.requests import ClientDisconnect
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from contracts.model import ModelContract
from contracts.request import api_models
from service.api import PredictionAPI
from service.config import ServiceSettings
from service.errors import InternalError, ModelUnavailableError, error_response
from service.exchange import Exchange
from service.inference_openapi import inference_paths
from service.inference_v2 import Handler, InferenceProtocol, inference_internal_error
from service.logs import LOGGER_NAME
from service.metrics import exposition
from service.schemas import ErrorBody, ModelCard
from service.shadow import is_mirrored

# Label of every request to a path the app does not serve (answered 404 by FastAPI).
UNMATCHED_ROUTE = "unmatched"
# Counted for a client that closed its connection before its request was read (nginx's code for it):
# not a 5xx, so it stays out of the error rate that alerts and canary analysis read.
CLIENT_CLOSED_REQUEST = 499
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody, "description": description}
    for code, description in {
        400: "Body is not valid JSON.",
        408: "Body not received within the request timeout; the connection closes.",
        413: "Body too large.",
        415: "Body not sent as application/json.",
        422: "Input breaks a hard limit; details name field, constraint and value.",
        500: "Unexpected fault, logged with its traceback.",
        503: "Overloaded, or the prediction timed out; retry later.",
    }.items()
}


def _json_body(model: type[BaseModel] | None) -> dict[str, Any] | None:
    """OpenAPI request body for endpoints that parse their JSON themselves, with nested models inlined."""
    if model is None:
        return None
    schema = model.model_json_schema()
    definitions = schema.pop("$defs", {})
    for prop in schema.get("properties", {}).values():
        reference = prop.get("items", {}).get("$ref", "")
        if reference:
            prop["items"] = definitions[reference.rsplit("/", 1)[-1]]
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


class TabulaApp(FastAPI):
    """FastAPI app that counts every response and answers every unexpected fault with a structured 500.

    Every HTTP request that reaches this app (all paths but BentoML's own /livez and /readyz) is
    counted once in ``tabula_http_requests_total``, under its route's path or ``UNMATCHED_ROUTE``
    for paths the app does not serve. An exception escaping a handler is logged once with its
    traceback and answered with the structured 500 at once: left to BentoML, the client waited for
    its 30 s traffic timeout and the log had no traceback. A client that disconnects before its
    request body is read is not a fault: nothing is sent, it counts as ``CLIENT_CLOSED_REQUEST`` and
    one INFO line names it. An answer given before the request body was read waits until the rest is
    read (bounded, see ``service.exchange``), so that every client receives it.

    The routes stay declared (OpenAPI, /docs, BentoML's merged spec), but POSTs to the prediction
    routes go straight to their handler (``fast_routes``): routing, FastAPI's middleware layers and
    dependency solving took a quarter of the CPU of a one-row prediction. The handlers answer every
    client error themselves. The Open Inference Protocol's ``/v2`` paths (:mod:`service.inference_v2`)
    are resolved the same way, each to its handler and its route label, and added to the OpenAPI
    document (:mod:`service.inference_openapi`).
    """

    def __init__(self, get_api: Callable[[], PredictionAPI | None], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.get_api = get_api
        self.fast_routes: dict[str, Handler] = {}
        # The Open Inference Protocol's /v2 routes, asked first; each resolves to its route label.
        self.inference = InferenceProtocol(get_api)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        started = time.perf_counter()
        api = self.get_api()
        settings = api.settings if api is not None else _settings()
        exchange = Exchange(scope, receive, send, settings.drain_max_bytes, settings.drain_seconds)
        inference = self.inference.resolve(scope["method"], scope["path"])
        try:
            if inference is None:
                await self._route(scope, exchange.receive, exchange.send)
            else:
                await _answer(inference.handler, scope, exchange.receive, exchange.send)
        except ClientDisconnect:
            # Nobody is left to answer (uvicorn drops what is sent after a disconnect), and no fault of ours.
            exchange.status = exchange.status or CLIENT_CLOSED_REQUEST
            logging.getLogger(LOGGER_NAME).info(
                "client disconnected before its request was read",
                extra={"method": scope["method"], "path": scope["path"]},
            )
        except Exception:
            logging.getLogger(LOGGER_NAME).exception(
                "unexpected error", extra={"method": scope["method"], "path": scope["path"]}
            )
            # Starlette has already answered for FastAPI's routes (see _on_unexpected).
            if not exchange.status:
                response = _internal_error() if inference is None else inference_internal_error()
                await response(scope, exchange.receive, exchange.send)
        if api is not None:
            if inference is None:
                route = self._route_label(scope["path"])
            else:
                route = inference.label or UNMATCHED_ROUTE
            # A shadow's answers to mirrored copies stay out of the live SLO series.
            copy = api.settings.shadow_track and is_mirrored(scope["headers"])
            metrics = api.shadow.metrics if copy else api.metrics
            metrics.observe_request(route, exchange.status, time.perf_counter() - started)

    def answers_directly(self, method: str, path: str) -> bool:
        """Whether this app routes the request itself (``service.edge`` skips the server's stack for it).

        The prediction POSTs and every ``/v2`` path: this app resolves them before any router, bounds
        their time and answers their faults. Its other routes are BentoML's to find.
        """
        return (method == "POST" and path in self.fast_routes) or self.inference.serves(path)

    async def _route(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] == "POST":
            handler = self.fast_routes.get(scope["path"])
            if handler is not None:
                await _answer(handler, scope, receive, send)
                return
        await super().__call__(scope, receive, send)

    def _route_label(self, path: str) -> str:
        # Unknown paths share one label: a label per path anyone may request would grow without bound.
        return path if path in self._paths else UNMATCHED_ROUTE

    def openapi(self) -> dict[str, Any]:
        """FastAPI's document of the declared routes, plus the ``/v2`` operations answered before routing."""
        if self.openapi_schema is None:
            document = super().openapi()
            paths, schemas = inference_paths()
            document["paths"].update(paths)
            document.setdefault("components", {}).setdefault("schemas", {}).update(schemas)
            self.openapi_schema = document
        return self.openapi_schema

    @cached_property
    def _paths(self) -> frozenset[str]:
        return frozenset(route.path for route in self.routes if isinstance(route, Route))


async def _answer(handler: Handler, scope: Scope, receive: Receive, send: Send) -> None:
    response = await handler(Request(scope, receive))
    await response(scope, receive, send)


@cache
def _settings() -> ServiceSettings:
    """Settings of a worker without a model (one with a model uses its API's)."""
    return ServiceSettings()


def _internal_error() -> Response:
    return error_response(InternalError("unexpected error while answering the request; it is logged"))


async def _on_unexpected(request: Request, error: Exception) -> Response:
    """FastAPI's handler of unexpected exceptions: Starlette sends its response, then re-raises."""
    return _internal_error()


def _unavailable() -> Response:
    return error_response(ModelUnavailableError("no model loaded, see the service log"))


def build_app(contract: ModelContract | None, get_api: Callable[[], PredictionAPI | None]) -> TabulaApp:
    """The app serving ``contract``'s model.

    Without a contract (the model's could not be read: its worker never becomes ready and answers
    503), the prediction routes are documented without bodies.
    """
    models = api_models(contract) if contract is not None else None
    if contract is None:
        title, description = "Prediction API", "No model contract could be read; see the service log."
    else:
        title = f"Prediction API: {contract.example} ({contract.task})"
        description = contract.description or f"Predicts {contract.target}."
    app = TabulaApp(
        get_api,
        title=title,
        description=description,
        version="1",
        docs_url="/docs",
        openapi_url="/openapi.json",
        redoc_url=None,
        exception_handlers={Exception: _on_unexpected},
    )

    @app.post(
        "/predict",
        response_model=models.answer if models is not None else None,
        responses=ERROR_RESPONSES,
        openapi_extra=_json_body(models.row if models is not None else None),
        summary="Predict one row",
    )
    async def predict(request: Request) -> Response:
        api = get_api()
        return _unavailable() if api is None else await api.predict(request)

    @app.post(
        "/predict/batch",
        response_model=models.batch_answer if models is not None else None,
        responses=ERROR_RESPONSES,
        openapi_extra=_json_body(models.batch if models is not None else None),
        summary="Predict up to TABULA_SERVICE_MAX_BATCH_ROWS rows",
    )
    async def predict_batch(request: Request) -> Response:
        api = get_api()
        return _unavailable() if api is None else await api.predict_batch(request)

    app.fast_routes.update({"/predict": predict, "/predict/batch": predict_batch})
    # TabulaApp answers /v2 before routing; these routes declare /v2 to routers that look into the
    # app's routes first (BentoML's PassiveMount forwards only paths one of them matches).
    app.router.routes.append(Route("/v2", app.inference, include_in_schema=False))
    app.mount("/v2", app.inference, name="open-inference-protocol")

    @app.get(
        "/model",
        response_model=ModelCard,
        responses={503: ERROR_RESPONSES[503]},
        summary="Model card of the served model",
    )
    async def model_card() -> Response:
        api = get_api()
        if api is None:
            return _unavailable()
        return Response(api.model_card().model_dump_json(), media_type="application/json")

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        """Prometheus scrape: the tabula_* metrics of every worker (reading files; off the event loop)."""
        body, content_type = await asyncio.to_thread(exposition)
        return Response(body, media_type=content_type)

    return app
