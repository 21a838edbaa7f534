"""BentoML service serving one tabular scikit-learn model (``bentoml serve service.service:TabulaService``).

The prediction API is a FastAPI app (:mod:`service.app`) mounted on the BentoML service, so that
every client mistake gets the structured 4xx body of docs/architecture.md, and it serves /metrics;
BentoML provides /livez, /readyz (via ``__is_ready__``) and the server. The model, its contract,
feature statistics and golden set come from the BentoML model store (a Bento pins its model), so
serving never needs the MLflow server. The app's request and response models are built from the
contract when this module is imported, so OpenAPI and /docs show the served model's fields.
"""

from __future__ import annotations

from pathlib import Path

import bentoml
from bentoml import get_current_service

from contracts.model import ModelContract
from contracts.modelio import ModelLoadError
from service.api import PredictionAPI
from service.app import build_app
from service.collector import settle_after_start_up
from service.config import ServiceSettings
from service.edge import install as install_edge
from service.event_loop import install as install_event_loop
from service.logs import configure_logger
from service.model import ModelInfo, load_model_dir, read_contract


def _model_tag() -> str:
    """A Bento built by ``tabula build`` pins its model through the ``model_tag`` build argument."""
    arguments = vars(bentoml.use_arguments())
    return str(arguments.get("model_tag") or ServiceSettings().model_tag)


def _served_contract(tag: str) -> ModelContract | None:
    """The contract of the model in the store, read at import so the app documents its fields.

    ``None`` when it cannot be read: the worker then fails to load the model too, logs why and is
    never ready.
    """
    stored = bentoml.models.BentoModel(tag).stored
    if stored is None:
        return None
    try:
        return read_contract(Path(stored.path))
    except ModelLoadError:
        return None


def _api() -> PredictionAPI | None:
    """The worker's prediction API, or None when its model failed to load."""
    # A plain call, not a FastAPI dependency: sync dependencies would cost a thread hop per request.
    # Imported once: ``bentoml.get_current_service`` resolves through BentoML's lazy module attributes
    # (an import per access), 3 % of single-row throughput at two calls a request.
    api: PredictionAPI | None = get_current_service().api
    return api


# Before BentoML's worker starts uvicorn: its loop accepts a crowd of new connections in batches.
install_event_loop()
MODEL_TAG = _model_tag()
app = build_app(_served_contract(MODEL_TAG), _api)
# Prediction requests skip BentoML's middleware and router: the app answers them itself.
install_edge(app)


@bentoml.service(
    name="tabula",
    # Its timeout middleware arms a timer per request that lives for the whole timeout, answered or
    # not (about 0.7 KB with its future): at 5,000 requests/s the former 30 s held 100 MB.
    traffic={"timeout": ServiceSettings().server_timeout_seconds},
    # BentoML's own request metrics cost a tenth of the CPU of a prediction and repeat what the
    # tabula_* metrics record per model version; /metrics is served above instead.
    metrics={"enabled": False},
    # Each prediction is logged by the service's own JSON logger; BentoML's access log would double it.
    logging={"access": {"enabled": False}},
    # No trace exporter is configured, yet OpenTelemetry's middleware opened spans for every request
    # and every body chunk: a sixth of the CPU per prediction. Excluded URLs skip the middleware.
    tracing={"excluded_urls": [".*"]},
)
@bentoml.asgi_app(app, path="/")
class TabulaService:
    bento_model = bentoml.models.BentoModel(MODEL_TAG)

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
        settle_after_start_up(settings.gc_young_threshold)

    def __is_ready__(self) -> bool:
        return self.ready

    @bentoml.on_shutdown  # type: ignore[untyped-decorator]  # bentoml's decorator is untyped
    def close(self) -> None:
        if self.api is not None:
            self.api.close()
