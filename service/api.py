"""Request handling of the prediction API: admission, checks, prediction, metrics and logs.

A plain class, built once per worker by :class:`service.service.TabulaService` after the model
is loaded; the FastAPI routes call it directly (no per-request dependency resolution).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from operator import attrgetter, itemgetter
from typing import Any, Literal, Protocol

import numpy as np
from pydantic import BaseModel, ValidationError
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import Response

from contracts.request import MAX_ROWS_CONTEXT, RangeWarning, api_models
from service.admission import Admission, shed_response
from service.batching import MicroBatcher, Rows
from service.config import ServiceSettings
from service.drift import DriftWindow
from service.errors import (
    OverloadedError,
    RequestTimeoutError,
    ServiceError,
    error_response,
    from_validation_error,
    read_json_body,
)
from service.metrics import ServiceMetrics
from service.model import LoadedModel, prediction_executor
from service.prediction_log import DB_SINK, DatabaseSink, PredictionLog
from service.ranges import OutOfRange, RangeChecker
from service.schemas import FeatureStatsSummary, ModelCard
from service.shadow import (
    REQUEST_MARK,
    RequestMark,
    ShadowComparison,
    ShadowMetrics,
    is_mirrored,
    mirror_from_settings,
)
from service.tasks import Answers, Outputs


class Wire(Protocol):
    """How one API protocol reads a prediction request's body and writes its errors."""

    async def read_body(self, request: Request, max_bytes: int) -> bytes: ...

    def error(self, error: ServiceError) -> Response: ...

    def shed(self) -> Response:
        """The 503 of a request refused by admission control."""


class JsonWire:
    """This service's own API: JSON bodies, the structured error body of docs/architecture.md."""

    async def read_body(self, request: Request, max_bytes: int) -> bytes:
        return await read_json_body(request, max_bytes)

    def error(self, error: ServiceError) -> Response:
        return error_response(error)

    def shed(self) -> Response:
        return shed_response()


JSON_WIRE = JsonWire()


# The route whose request a copy of another protocol's prediction becomes on its way to the shadow.
BATCH_ROUTE = "/predict/batch"


@dataclass(frozen=True)
class Answered:
    """A successful prediction: the model's raw outputs, their answers, range warnings and its id."""

    outputs: Outputs
    answers: Answers
    warnings: list[RangeWarning]
    prediction_id: str
    timestamp: datetime


@dataclass(frozen=True)
class ProtocolAnswer:
    """An answer in another protocol's encoding (the Open Inference Protocol's), with its rows and
    prediction: the mirror copies them to the shadow as the ``/predict/batch`` request they equal."""

    response: Response
    rows: Rows
    answered: Answered


def row_reader(names: list[str]) -> Callable[[BaseModel], tuple[float, ...]]:
    """Reads a request row's features in the model's column order, in one C-level call."""
    return _as_tuple(attrgetter(*names), len(names))


def dict_reader(names: list[str]) -> Callable[[dict[str, float]], tuple[float, ...]]:
    """Reads a row validated to a dict (a batch's, see ``batch_rows_adapter``) in the model's column order."""
    return _as_tuple(itemgetter(*names), len(names))


def _as_tuple(read: Callable[[Any], Any], width: int) -> Callable[[Any], tuple[float, ...]]:
    # attrgetter and itemgetter give a bare value, not a tuple, for one name.
    if width == 1:
        return lambda features: (read(features),)
    return read


class PredictionAPI:
    """Everything one worker needs to answer prediction requests for one loaded model."""

    def __init__(self, model: LoadedModel, settings: ServiceSettings, logger: logging.Logger) -> None:
        info = model.info
        self.model = model
        self.settings = settings
        # Request and response bodies of the served model's contract (the app documents the same).
        self.models = api_models(model.contract)
        self._row_values = row_reader(model.feature_names)
        self._dict_values = dict_reader(model.feature_names)
        self.logger = logger
        # Set once the golden set is reproduced (golden_set_reproduces): /readyz and /v2/health/ready.
        self.ready = False
        self.metrics = ServiceMetrics(info.name, info.version, info.run_id, registry=None)
        self.ranges = RangeChecker(model.stats, model.feature_names)
        self.drift = DriftWindow(model.stats, model.feature_names, settings.drift_window_size)
        self._drift_updated = 0.0
        self.executor = prediction_executor(settings.predict_threads)
        self.batcher = MicroBatcher(
            model.predict,
            self.executor,
            settings.max_batch_rows,
            inline_rows=model.fast_rows,
            on_batch=self._track_drift,
            stepwise=model.stepwise,
        )
        self.prediction_log = PredictionLog(
            logger,
            info.name,
            info.version,
            model.feature_names,
            enabled=settings.log_predictions,
            sample_rate=settings.input_log_sample_rate,
            sink=self._database_sink(),
        )
        self._extra: Literal["ignore"] | None = "ignore" if settings.allow_extra_fields else None
        self.admission = Admission(
            settings.admission_target_seconds,
            settings.admission_wait_seconds,
            settings.admission_refusal_seconds,
            settings.concurrency_limit,
            settings.admission_order,
            on_shed=self.metrics.count_shed,
        )
        self.mirror = mirror_from_settings(settings, self.metrics.model_labels, logger)
        self.shadow = ShadowComparison(
            ShadowMetrics(self.metrics.model_labels, registry=None), logger, settings.log_predictions
        )

    async def predict(self, request: Request) -> Response:
        return await self.serve(request, self._predict_one)

    async def predict_batch(self, request: Request) -> Response:
        return await self.serve(request, self._predict_many)

    def close(self) -> None:
        self.prediction_log.close()
        if self.mirror is not None:
            self.mirror.close()
        self.executor.shutdown(wait=False)

    async def serve(
        self,
        request: Request,
        handle: Callable[[bytes, float], Awaitable[BaseModel | ProtocolAnswer]],
        wire: Wire = JSON_WIRE,
    ) -> Response:
        """Admission control, body checks and timeout around one prediction handler.

        Every prediction route of every protocol comes through here (``wire`` says how its bodies are
        read and its errors written). Client errors become their 4xx/503 here; anything else is left
        to the app's one catch-all (``service.app.TabulaApp``), which also counts every response.
        """
        started = time.perf_counter()
        marked = is_mirrored(request.scope["headers"])
        mark = RequestMark(mirrored=marked and self.settings.shadow_track)
        REQUEST_MARK.set(mark)
        # The connection (peer host and port) is the client that admission shares the worker between.
        peer = request.scope.get("client") if self.settings.admission_fair_share else None
        length = request.headers.get("content-length")
        ticket = await self.admission.enter(length, tuple(peer) if peer else None)
        if ticket is None:
            response = wire.shed()
        else:
            received = False
            try:
                async with asyncio.timeout(self.settings.request_timeout_seconds):
                    body = await wire.read_body(request, self.settings.max_request_bytes)
                    received = True
                    result = await handle(body, started)
                if isinstance(result, ProtocolAnswer):
                    response = result.response
                else:
                    response = Response(result.model_dump_json(), media_type="application/json")
                if mark.mirrored:
                    self.shadow.compare(request.headers.get, self._own_answer(result))
                elif self.mirror is not None and not marked:
                    # Run once the client has the whole answer.
                    response.background = BackgroundTask(
                        self._mirror_copy, request.url.path, body, result, mark.prediction_id
                    )
            except ServiceError as error:
                response = wire.error(error)
            except TimeoutError:
                if received:
                    self.metrics.count_shed("timeout")
                    response = wire.error(OverloadedError("request timed out, retry shortly"))
                else:
                    # The body stopped arriving: the client's delay, not an overload of the service.
                    timeout = self.settings.request_timeout_seconds
                    response = wire.error(
                        RequestTimeoutError(f"request body not received within {timeout} s")
                    )
            finally:
                self.admission.leave(ticket)
        return response

    async def answer_rows(self, route: str, started: float, rows: Rows, batch: bool) -> Answered:
        """Predicts validated rows (model column order), with range warnings, metrics and the log."""
        outputs = await self.batcher.predict(rows)
        answers = self.model.task.answers(outputs)
        warnings = self._range_warnings(rows, batch)
        prediction_id, timestamp = self._account(route, started, rows.tolist(), answers)
        return Answered(outputs, answers, warnings, prediction_id, timestamp)

    async def _predict_one(self, body: bytes, started: float) -> BaseModel:
        try:
            features = self.models.row.model_validate_json(body, extra=self._extra)
        except ValidationError as error:
            raise from_validation_error(error) from None
        rows = np.array([self._row_values(features)], dtype=np.float64)
        answered = await self.answer_rows("/predict", started, rows, batch=False)
        # Built from values the service computed itself: no need to validate them again.
        return self.models.answer.model_construct(
            **answered.answers.single(),
            prediction_id=answered.prediction_id,
            model_name=self.model.info.name,
            model_version=self.model.info.version,
            timestamp=answered.timestamp,
            warnings=answered.warnings,
        )

    async def _predict_many(self, body: bytes, started: float) -> BaseModel:
        context = {MAX_ROWS_CONTEXT: self.settings.max_batch_rows}
        try:
            valid = self.models.batch_rows.validate_json(body, extra=self._extra, context=context)
            read_dict = self._dict_values
            rows = np.array([read_dict(features) for features in valid["rows"]], dtype=np.float64)
        except ValidationError:
            # Rejected: the documented batch model says why (and decides, should the two ever differ).
            try:
                batch = self.models.batch.model_validate_json(body, extra=self._extra, context=context)
            except ValidationError as error:
                raise from_validation_error(error) from None
            read = self._row_values
            rows = np.array([read(features) for features in batch.rows], dtype=np.float64)  # type: ignore[attr-defined]
        answered = await self.answer_rows(BATCH_ROUTE, started, rows, batch=True)
        return self._batch_answer(rows, answered)

    def _batch_answer(self, rows: Rows, answered: Answered) -> BaseModel:
        # Built from values the service computed itself: no need to validate them again.
        return self.models.batch_answer.model_construct(
            **answered.answers.batch(),
            count=rows.shape[0],
            model_name=self.model.info.name,
            model_version=self.model.info.version,
            warnings=answered.warnings,
        )

    def _own_answer(self, result: BaseModel | ProtocolAnswer) -> BaseModel:
        """The answer in this service's own terms: another protocol's is the batch answer it equals."""
        if isinstance(result, ProtocolAnswer):
            return self._batch_answer(result.rows, result.answered)
        return result

    async def _mirror_copy(
        self, path: str, body: bytes, result: BaseModel | ProtocolAnswer, prediction_id: str | None
    ) -> None:
        """Offer the shadow a copy; another protocol's request goes as the ``/predict/batch`` it equals."""
        assert self.mirror is not None  # noqa: S101 - only scheduled when there is a mirror
        if isinstance(result, ProtocolAnswer):
            names = self.model.feature_names
            rows = [dict(zip(names, row, strict=True)) for row in result.rows.tolist()]
            path, body = BATCH_ROUTE, json.dumps({"rows": rows}).encode()
        self.mirror.offer(path, body, self._own_answer(result), prediction_id)

    def _range_warnings(self, rows: Rows, batch: bool) -> list[RangeWarning]:
        found: list[OutOfRange] = self.ranges.check(rows)
        for item in found:
            self.metrics.count_out_of_range(item.feature)
        return [
            RangeWarning(
                feature=item.feature,
                value=item.value,
                low=item.low,
                high=item.high,
                row=item.row if batch else None,
            )
            for item in found
        ]

    def _account(
        self, endpoint: str, started: float, rows: list[list[float]], answers: Answers
    ) -> tuple[str, datetime]:
        """Metrics and prediction log of a successful prediction; returns its id and timestamp."""
        prediction_id = str(uuid.uuid4())
        timestamp = datetime.now(UTC)
        mark = REQUEST_MARK.get()
        if mark is not None:
            mark.prediction_id = prediction_id
            if mark.mirrored:  # a shadow's answer to a copy: paired in serve, not live traffic
                return prediction_id, timestamp
        answers.observe(self.metrics, endpoint)
        latency_ms = (time.perf_counter() - started) * 1000
        self.prediction_log.record(prediction_id, endpoint, timestamp, latency_ms, rows, answers)
        return prediction_id, timestamp

    def _track_drift(self, rows: Rows) -> None:
        self.drift.add(rows)
        now = time.monotonic()
        if now - self._drift_updated >= self.settings.drift_update_seconds:
            self._drift_updated = now
            self.metrics.set_drift(self.drift.psi())

    def golden_set_reproduces(self) -> bool:
        tolerance = self.settings.golden_tolerance or self.model.golden.tolerance
        try:
            error = self.executor.submit(self.model.golden_error).result()
        except Exception:
            self.logger.exception("golden set could not be predicted")
            return False
        ready = self.ready = error <= tolerance
        self.logger.info(
            "model loaded",
            extra={
                "run_id": self.model.info.run_id,
                "bento_model_tag": self.model.info.bento_model_tag,
                "predictor": self.model.predictor,
                "golden_max_error": error,
                "golden_tolerance": tolerance,
                "ready": ready,
            },
        )
        return ready

    def _database_sink(self) -> DatabaseSink | None:
        if self.settings.prediction_log_db_url is None:
            return None
        return DatabaseSink(
            self.settings.prediction_log_db_url,
            queue_size=self.settings.prediction_log_queue_size,
            batch_size=self.settings.prediction_log_batch_size,
            flush_seconds=self.settings.prediction_log_flush_seconds,
            on_dropped=lambda n: self.metrics.count_dropped(DB_SINK, n),
            logger=self.logger,
        )

    def model_card(self) -> ModelCard:
        ranges = self.ranges
        summaries = self.model.stats.by_name()
        contract = self.model.contract
        return ModelCard(
            name=self.model.info.name,
            version=self.model.info.version,
            task=contract.task,
            target=contract.target,
            class_labels=contract.class_labels,
            run_id=self.model.info.run_id,
            alias=self.model.info.alias,
            metrics=self.model.info.metrics,
            feature_importances=self.model.feature_importances(),
            feature_stats=[
                FeatureStatsSummary(
                    name=name,
                    min=summaries[name].min,
                    max=summaries[name].max,
                    mean=summaries[name].mean,
                    std=summaries[name].std,
                    soft_low=float(ranges.low[index]),
                    soft_high=float(ranges.high[index]),
                )
                for index, name in enumerate(self.model.feature_names)
            ],
            training_rows=self.model.stats.n_rows,
            bento_model_tag=self.model.info.bento_model_tag,
            predictor=self.model.predictor,
            loaded_at=self.model.loaded_at,
        )
