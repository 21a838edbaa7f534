"""The OpenAPI description of the Open Inference Protocol's ``/v2`` paths.

The app answers ``/v2`` before FastAPI routes anything (:class:`service.app.TabulaApp`), so FastAPI
cannot derive these operations from routes: :func:`inference_paths` describes them, following the
protocol's REST specification (KServe's ``open-inference-protocol``, ``rest_predict_v2.yaml``), with
models of the answers :mod:`service.inference_v2` gives (a unit test checks every kind of answer against
them). OpenAPI and ``/docs`` then show both protocols, and clients generated from the document reach
``/v2`` too.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from service.inference_v2 import InferenceRequest

COMPONENTS_PREFIX = "#/components/schemas/"
TAG = "Open Inference Protocol (v2)"


class InferenceErrorBody(BaseModel):
    """The protocol's error body."""

    error: str


class ServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str]


class Liveness(BaseModel):
    live: bool


class Readiness(BaseModel):
    ready: bool = Field(description="Model loaded and its golden set reproduced, as /readyz.")


class ModelReadiness(BaseModel):
    name: str
    ready: bool


class TensorMetadata(BaseModel):
    name: str
    datatype: str
    shape: list[int] = Field(description="-1 where the size varies (the row count).")


class FeatureMetadata(TensorMetadata):
    """One feature, sent as its own input with ``content_type: pd``."""

    description: str
    minimum: float | None = None
    maximum: float | None = None


class ModelMetadata(BaseModel):
    """``$metadata_model_response``, plus the contract's features and, for a classifier, its labels."""

    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]
    parameters: dict[str, Any]
    features: list[FeatureMetadata]
    class_labels: list[str] | None = None


class ResponseTensor(BaseModel):
    name: str
    datatype: str
    shape: list[int]
    parameters: dict[str, Any] | None = Field(
        default=None, description="binary_data_size when the values follow the JSON part as binary data."
    )
    data: list[Any] | None = None


class InferenceResponse(BaseModel):
    """``$inference_response``; ``parameters`` holds the prediction id and any range warnings (as JSON)."""

    model_name: str
    model_version: str
    id: str
    parameters: dict[str, Any]
    outputs: list[ResponseTensor]


ANSWERS: tuple[type[BaseModel], ...] = (
    InferenceRequest,
    InferenceErrorBody,
    ServerMetadata,
    Liveness,
    Readiness,
    ModelReadiness,
    ModelMetadata,
    InferenceResponse,
)
NAME = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
VERSION = {"name": "version", "in": "path", "required": True, "schema": {"type": "string"}}
BINARY = {"type": "string", "format": "binary"}
ERRORS = {
    400: "A client mistake: not an inference request, a wrong shape or datatype, a value out of bounds.",
    404: "Unknown model or version.",
    408: "Body not received within the request timeout; the connection closes.",
    413: "Body too large.",
    415: "Unsupported Content-Encoding.",
    503: "No model loaded, or overloaded; retry after Retry-After.",
}


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": COMPONENTS_PREFIX + model.__name__}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _json_or_binary(model: type[BaseModel]) -> dict[str, Any]:
    """A body in JSON, or in the binary tensor data extension (its JSON part, then raw tensors)."""
    return {"application/json": {"schema": _ref(model)}, "application/octet-stream": {"schema": BINARY}}


def _errors(*codes: int) -> dict[str, Any]:
    return {str(code): _json(_ref(InferenceErrorBody), ERRORS[code]) for code in codes}


def _operation(summary: str, parameters: list[dict[str, Any]], responses: dict[str, Any]) -> dict[str, Any]:
    operation: dict[str, Any] = {"tags": [TAG], "summary": summary, "responses": responses}
    if parameters:
        operation["parameters"] = parameters
    return operation


def _model_paths(prefix: str, parameters: list[dict[str, Any]], which: str) -> dict[str, Any]:
    infer = _operation(
        f"Predict with {which}",
        parameters,
        {
            "200": {
                "description": "Predictions; a classifier adds the class probabilities.",
                "content": _json_or_binary(InferenceResponse),
            },
            **_errors(400, 404, 408, 413, 415, 503),
        },
    )
    infer["requestBody"] = {
        "required": True,
        "description": "JSON, or with the binary tensor data extension the JSON part "
        "(Inference-Header-Content-Length bytes) followed by raw little-endian tensors.",
        "content": _json_or_binary(InferenceRequest),
    }
    not_ready = {"anyOf": [_ref(ModelReadiness), _ref(InferenceErrorBody)]}
    return {
        prefix: {
            "get": _operation(
                f"Metadata of {which}",
                parameters,
                {"200": _json(_ref(ModelMetadata), "Model metadata."), **_errors(404, 503)},
            )
        },
        f"{prefix}/ready": {
            "get": _operation(
                f"Readiness of {which}",
                parameters,
                {
                    "200": _json(_ref(ModelReadiness), "Ready."),
                    **_errors(404),
                    "503": _json(not_ready, "Not ready, or no model loaded."),
                },
            )
        },
        f"{prefix}/infer": {"post": infer},
    }


def inference_paths() -> tuple[dict[str, Any], dict[str, Any]]:
    """The ``/v2`` path items, and the component schemas they refer to."""
    schemas: dict[str, Any] = {}
    for model in ANSWERS:
        schema = model.model_json_schema(ref_template=COMPONENTS_PREFIX + "{model}")
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
    paths = {
        "/v2": {
            "get": _operation(
                "Server metadata", [], {"200": _json(_ref(ServerMetadata), "Name, version and extensions.")}
            )
        },
        "/v2/health/live": {"get": _operation("Liveness", [], {"200": _json(_ref(Liveness), "Alive.")})},
        "/v2/health/ready": {
            "get": _operation(
                "Readiness",
                [],
                {"200": _json(_ref(Readiness), "Ready."), "503": _json(_ref(Readiness), "Not ready.")},
            )
        },
        **_model_paths("/v2/models/{name}", [NAME], "the served model"),
        **_model_paths(
            "/v2/models/{name}/versions/{version}", [NAME, VERSION], "one version of the served model"
        ),
    }
    return paths, schemas
