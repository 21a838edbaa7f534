"""BentoML service predicting California house prices (``bentoml serve service.service:HousingService``).

The prediction API is a FastAPI app mounted on the BentoML service, so that every client
mistake gets the structured 4xx body of docs/architecture.md, and it serves /metrics; BentoML
provides /livez, /readyz (via ``__is_ready__``) and the server. The model, its feature statistics
and its golden set come from the BentoML model store (a Bento pins its model), so serving
never needs the MLflow server.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Awaitable, Callable
from functools import cache, cached_property
from pathlib import Path
from typing import Any

import bentoml
from fastapi import FastAPI, Request
from pydantic import BaseModel
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from service.api import PredictionAPI
from service.config import ServiceSettings
from service.errors import InternalError, ModelUnavailableError, error_response
from service.exchange import Exchange
from service.logs import LOGGER_NAME, configure_logger
from service.metrics import exposition
from service.model import ModelInfo, load_model_dir
from service.schemas import (
    BatchRequest,
    BatchResponse,
    ErrorBody,
    HouseFeatures,
    ModelCard,
    PredictionResponse,
)
from service.shadow import is_mirrored
from training.modelio import ModelLoadError


def _model_tag() -> str:
    """A Bento built by ``housing build`` pins its model through the ``model_tag`` build argument."""
    arguments = vars(bentoml.use_arguments())
    return str(arguments.get("model_tag") or ServiceSettings().model_tag)


def _json_body(model: type[BaseModel]) -> dict[str, Any]:
    """OpenAPI request body for endpoints that parse their JSON themselves, with nested models inlined."""
    schema = model.model_json_schema()
    definitions = schema.pop("$defs", {})
    for prop in schema.get("properties", {}).values():
        reference = prop.get("items", {}).get("$ref", "")
        if reference:
            prop["items"] = definitions[reference.rsplit("/", 1)[-1]]
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


# Label of every request to a path the app does not serve (answered 404 by FastAPI).
UNMATCHED_ROUTE = "unmatched"
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody, "description": description}
    for code, description in {
        400: "Body is not valid JSON.",
        413: "Body too large.",
        415: "Body not sent as application/json.",
        422: "Input breaks a hard limit; details name field, constraint and value.",
        500: "Unexpected fault, logged with its traceback.",
        503: "Overloaded or timed out; retry later.",
    }.items()
}


class HousingApp(FastAPI):
    """FastAPI app that counts every response and answers every unexpected fault with a structured 500.

    Every HTTP request that reaches this app (all paths but BentoML's own /livez and /readyz) is
    counted once in ``housing_http_requests_total``, under its route's path or ``UNMATCHED_ROUTE``
    for paths the app does not serve. An exception escaping a handler is logged once with its
    traceback and answered with the structured 500 at once: left to BentoML, the client waited for
    its 30 s traffic timeout and the log had no traceback. An answer given before the request body
    was read waits until the rest is read (bounded, see ``service.exchange``), so that every client
    receives it.

    The routes stay declared below (OpenAPI, /docs, BentoML's merged spec), but POSTs to the
    prediction routes go straight to their handler: routing, FastAPI's middleware layers and
    dependency solving took a quarter of the CPU of a one-row prediction. The handlers answer every
    client error themselves.
    """

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        started = time.perf_counter()
        api = _api()
        settings = api.settings if api is not None else _settings()
        exchange = Exchange(scope, receive, send, settings.drain_max_bytes, settings.drain_seconds)
        try:
            await self._route(scope, exchange.receive, exchange.send)
        except Exception:
            logging.getLogger(LOGGER_NAME).exception(
                "unexpected error", extra={"method": scope["method"], "path": scope["path"]}
            )
            # Starlette has already answered for FastAPI's routes (see _on_unexpected).
            if not exchange.status:
                await _internal_error()(scope, exchange.receive, exchange.send)
        if api is not None:
            route = self._route_label(scope["path"])
            # A shadow's answers to mirrored copies stay out of the live SLO series.
            copy = api.settings.shadow_track and is_mirrored(scope["headers"])
            metrics = api.shadow.metrics if copy else api.metrics
            metrics.observe_request(route, exchange.status, time.perf_counter() - started)

    async def _route(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] == "POST":
            handler = FAST_ROUTES.get(scope["path"])
            if handler is not None:
                response = await handler(Request(scope, receive))
                await response(scope, receive, send)
                return
        await super().__call__(scope, receive, send)

    def _route_label(self, path: str) -> str:
        # Unknown paths share one label: a label per path anyone may request would grow without bound.
        return path if path in self._paths else UNMATCHED_ROUTE

    @cached_property
    def _paths(self) -> frozenset[str]:
        return frozenset(route.path for route in self.routes if isinstance(route, Route))


@cache
def _settings() -> ServiceSettings:
    """Settings of a worker without a model (one with a model uses its API's)."""
    return ServiceSettings()


def _internal_error() -> Response:
    return error_response(InternalError("unexpected error while answering the request; it is logged"))


async def _on_unexpected(request: Request, error: Exception) -> Response:
    """FastAPI's handler of unexpected exceptions: Starlette sends its response, then re-raises."""
    return _internal_error()


app = HousingApp(
    title="California Housing price prediction",
    description="Predicts median house values of California block groups.",
    version="1",
    docs_url="/docs",
    openapi_url="/openapi.json",
    redoc_url=None,
    exception_handlers={Exception: _on_unexpected},
)


def _api() -> PredictionAPI | None:
    """The worker's prediction API, or None when its model failed to load."""
    # A plain call, not a FastAPI dependency: sync dependencies would cost a thread hop per request.
    api: PredictionAPI | None = bentoml.get_current_service().api
    return api


def _unavailable() -> Response:
    return error_response(ModelUnavailableError("no model loaded, see the service log"))


@app.post(
    "/predict",
    response_model=PredictionResponse,
    responses=ERROR_RESPONSES,
    openapi_extra=_json_body(HouseFeatures),
    summary="Predict one district",
)
async def predict(request: Request) -> Response:
    api = _api()
    return _unavailable() if api is None else await api.predict(request)


@app.post(
    "/predict/batch",
    response_model=BatchResponse,
    responses=ERROR_RESPONSES,
    openapi_extra=_json_body(BatchRequest),
    summary="Predict up to HOUSING_SERVICE_MAX_BATCH_ROWS districts",
)
async def predict_batch(request: Request) -> Response:
    api = _api()
    return _unavailable() if api is None else await api.predict_batch(request)


FAST_ROUTES: dict[str, Callable[[Request], Awaitable[Response]]] = {
    "/predict": predict,
    "/predict/batch": predict_batch,
}


@app.get(
    "/model",
    response_model=ModelCard,
    responses={503: ERROR_RESPONSES[503]},
    summary="Model card of the served model",
)
async def model_card() -> Response:
    api = _api()
    if api is None:
        return _unavailable()
    return Response(api.model_card().model_dump_json(), media_type="application/json")


@app.get("/metrics", include_in_schema=False)
async def metrics() -> Response:
    """Prometheus scrape: the housing_* metrics of every worker (reading files; off the event loop)."""
    body, content_type = await asyncio.to_thread(exposition)
    return Response(body, media_type=content_type)


@bentoml.service(
    name="housing",
    # Its timeout middleware arms a timer per request that lives for the whole timeout, answered or
    # not (about 0.7 KB with its future): at 5,000 requests/s the former 30 s held 100 MB.
    traffic={"timeout": ServiceSettings().server_timeout_seconds},
    # BentoML's own request metrics cost a tenth of the CPU of a prediction and repeat what the
    # housing_* metrics record per model version; /metrics is served above instead.
    metrics={"enabled": False},
    # Each prediction is logged by the service's own JSON logger; BentoML's access log would double it.
    logging={"access": {"enabled": False}},
    # No trace exporter is configured, yet OpenTelemetry's middleware opened spans for every request
    # and every body chunk: a sixth of the CPU per prediction. Excluded URLs skip the middleware.
    tracing={"excluded_urls": [".*"]},
)
@bentoml.asgi_app(app, path="/")
class HousingService:
    bento_model = bentoml.models.BentoModel(_model_tag())

    def __init__(self) -> None:
        settings = ServiceSettings()
        stored = self.bento_model
        info = ModelInfo.from_metadata(dict(stored.info.metadata), str(stored.tag))
        logger = configure_logger(info.name, info.version, settings.log_format, settings.log_level)
        self.api: PredictionAPI | None = None
        self.ready = False
        try:
            model = load_model_dir(Path(stored.path), info)
        except ModelLoadError as error:
            # Raising would make BentoML print the traceback and restart the worker, again and again.
            # Alive but never ready instead: the rollout stalls on readiness and this line says why.
            logger.error(
                "model could not be loaded",
                extra={"bento_model_tag": info.bento_model_tag, "error": str(error), "ready": False},
            )
            return
        self.api = PredictionAPI(model, settings, logger)
        self.ready = self.api.golden_set_reproduces()
        # Start-up objects (model, libraries) never die: keep them out of every future GC pass.
        gc.freeze()

    def __is_ready__(self) -> bool:
        return self.ready

    @bentoml.on_shutdown  # type: ignore[untyped-decorator]  # bentoml's decorator is untyped
    def close(self) -> None:
        if self.api is not None:
            self.api.close()
