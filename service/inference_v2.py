"""The Open Inference Protocol (KServe v2, REST), served next to the service's own API.

The same model answers, through the same serving path (:meth:`service.api.PredictionAPI.serve`:
admission control, body limits, timeout) and the same accounting (metrics, prediction log, drift,
range warnings); only the wire differs. What is served follows the protocol's REST specification
(KServe's ``open-inference-protocol`` repository, ``rest_predict_v2.yaml`` and its text):

- ``GET /v2``, ``/v2/health/live``, ``/v2/health/ready`` (ready: model loaded and golden set
  reproduced, as ``/readyz``);
- ``GET /v2/models/{name}[/versions/{version}]`` (metadata from the model contract) and ``.../ready``;
- ``POST /v2/models/{name}[/versions/{version}]/infer``: one tensor ``input`` of shape ``[N, F]``
  (features in the contract's order), or one input per feature (request parameter
  ``content_type: "pd"``, each of shape ``[N]`` or ``[N, 1]``); answers ``prediction`` (FP64 for a
  regressor, the label as BYTES for a classifier) and, for a classifier, ``probabilities`` (FP64
  ``[N, C]`` in the contract's label order).

Triton's binary tensor data extension is supported both ways (``tritonclient`` uses it by default):
a body whose JSON part is ``Inference-Header-Content-Length`` bytes long, followed by raw
little-endian tensors (BYTES elements each prefixed by their 4-byte length). Request bodies may be
compressed (``Content-Encoding`` gzip or deflate, tritonclient's ``request_compression_algorithm``);
answers are not. Errors are the
protocol's ``{"error": "..."}``: 400 for a client's mistake, 404 for an unknown model, version or
path, never 500 for a client's mistake.
"""

from __future__ import annotations

import json
import math
import struct
import zlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from contracts.model import ModelContract
from service.api import PredictionAPI, ProtocolAnswer
from service.errors import (
    InternalError,
    InvalidJsonError,
    InvalidTensorError,
    MethodNotAllowedError,
    ModelUnavailableError,
    NotFoundError,
    OverloadedError,
    PayloadTooLargeError,
    ServiceError,
    UnsupportedMediaTypeError,
    inference_error_response,
    read_body,
)
from service.tasks import Outputs

Handler = Callable[[Request], Awaitable[Response]]
Values = npt.NDArray[Any]

SERVER_NAME = "tabula"
SERVER_VERSION = "1"
PLATFORM = "scikit-learn"
BINARY_EXTENSION = "binary_tensor_data"
HEADER_LENGTH = "inference-header-content-length"
# Name of the one-tensor input; the per-feature form names each input after its feature.
TENSOR_INPUT = "input"
PREDICTION = "prediction"
PROBABILITIES = "probabilities"
COLUMNS = "pd"
# Little-endian layouts of the numeric datatypes accepted as inputs.
NUMERIC = {"FP64": "<f8", "FP32": "<f4", "INT64": "<i8", "INT32": "<i4"}
# zlib window bits of the request encodings served (HTTP's "deflate" is the zlib format).
COMPRESSION_WINDOWS = {"gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}
# Errors list at most this many names (a client may send thousands of inputs).
NAMES_SHOWN = 10


class RequestTensor(BaseModel):
    model_config = ConfigDict(extra="ignore")

    name: str
    shape: list[StrictInt]
    datatype: str
    parameters: dict[str, Any] | None = None
    data: list[Any] | None = None


class RequestedOutput(BaseModel):
    model_config = ConfigDict(extra="ignore")

    name: str
    parameters: dict[str, Any] | None = None


class InferenceRequest(BaseModel):
    """``$inference_request`` (other keys, such as the ``model_name`` KServe's client adds, are ignored)."""

    model_config = ConfigDict(extra="ignore")

    id: str | None = None
    parameters: dict[str, Any] | None = None
    inputs: list[RequestTensor] = Field(min_length=1)
    outputs: list[RequestedOutput] | None = None


class InferenceWire:
    """The protocol's wire: any media type (binary bodies are octet streams), ``{"error": ...}`` bodies."""

    async def read_body(self, request: Request, max_bytes: int) -> bytes:
        encoding = request.headers.get("content-encoding", "identity").strip().lower()
        window = COMPRESSION_WINDOWS.get(encoding)
        if encoding != "identity" and window is None:
            raise UnsupportedMediaTypeError(
                f"Content-Encoding {encoding} is not served: gzip, deflate or none"
            )
        body = await read_body(request, max_bytes)
        if window is None:
            return body
        # tritonclient's request_compression_algorithm; the limit holds for the decompressed body too.
        decompressor = zlib.decompressobj(window)
        try:
            inflated = decompressor.decompress(body, max_bytes + 1)
        except zlib.error:
            raise InvalidJsonError(f"request body is not valid {encoding} data") from None
        if len(inflated) > max_bytes:
            raise PayloadTooLargeError(f"decompressed request body over {max_bytes} bytes")
        return inflated

    def error(self, error: ServiceError) -> Response:
        return inference_error_response(error)

    def shed(self) -> Response:
        return inference_error_response(OverloadedError("overloaded, retry after the Retry-After delay"))


INFERENCE_WIRE = InferenceWire()


class BinaryData:
    """The binary part of a request body, handed out to the inputs in their order."""

    def __init__(self, data: memoryview, declared: bool) -> None:
        self._data = data
        self._declared = declared
        self._offset = 0

    def take(self, size: Any, name: str) -> memoryview:
        if not self._declared:
            raise InvalidTensorError(
                f"input {name!r} declares binary_data_size but the request has no "
                "Inference-Header-Content-Length header"
            )
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise InvalidTensorError(f"input {name!r}: binary_data_size must be a whole number of bytes")
        end = self._offset + size
        if end > len(self._data):
            raise InvalidTensorError(
                f"input {name!r}: binary_data_size {size} runs past the end of the body's binary data"
            )
        chunk = self._data[self._offset : end]
        self._offset = end
        return chunk

    def check_consumed(self) -> None:
        left = len(self._data) - self._offset
        if left:
            raise InvalidTensorError(f"{left} bytes of binary data follow the last input's binary_data_size")


def parse_request(body: bytes, header_length: str | None) -> tuple[InferenceRequest, BinaryData]:
    """The JSON part of a body, validated, and its binary part (the binary tensor data extension)."""
    if header_length is None:
        header, binary = body, BinaryData(memoryview(b""), declared=False)
    else:
        length = header_length.strip()
        if not length.isdigit() or int(length) > len(body):
            raise InvalidTensorError(
                f"Inference-Header-Content-Length {header_length!r} is not a byte count within the "
                f"body's {len(body)} bytes"
            )
        header, binary = body[: int(length)], BinaryData(memoryview(body)[int(length) :], declared=True)
    try:
        request = InferenceRequest.model_validate_json(header)
    except ValidationError as error:
        problems = error.errors(include_url=False)
        if any(problem["type"] == "json_invalid" for problem in problems):
            raise InvalidJsonError(f"request body is not valid JSON: {problems[0]['msg']}") from None
        described = "; ".join(
            f"{'.'.join(str(part) for part in problem['loc']) or 'body'}: {problem['msg']}"
            for problem in problems[:3]
        )
        raise InvalidTensorError(f"not an inference request: {described}") from None
    return request, binary


def tensor_values(tensor: RequestTensor, binary: BinaryData) -> npt.NDArray[np.float64]:
    """An input tensor's values as float64, in its declared shape."""
    name, datatype = tensor.name, tensor.datatype
    layout = NUMERIC.get(datatype)
    if layout is None:
        raise InvalidTensorError(
            f"input {name!r} has datatype {datatype}; send FP64 or FP32 (INT64 and INT32 are accepted too)"
        )
    if any(size < 0 for size in tensor.shape):
        raise InvalidTensorError(f"input {name!r} has shape {tensor.shape}: sizes cannot be negative")
    count = math.prod(tensor.shape)
    binary_size = (tensor.parameters or {}).get("binary_data_size")
    if binary_size is not None:
        if tensor.data is not None:
            raise InvalidTensorError(f"input {name!r} has both data and binary_data_size")
        raw = binary.take(binary_size, name)
        expected = count * np.dtype(layout).itemsize
        if len(raw) != expected:
            raise InvalidTensorError(
                f"input {name!r}: {len(raw)} bytes of binary data, its shape {tensor.shape} of "
                f"{datatype} takes {expected}"
            )
        values: Values = np.frombuffer(raw, dtype=layout)
    else:
        if tensor.data is None:
            raise InvalidTensorError(f"input {name!r} has neither data nor binary_data_size")
        values = _json_values(tensor, layout)
        if values.size != count:
            raise InvalidTensorError(
                f"input {name!r} has {values.size} values, its shape {tensor.shape} holds {count}"
            )
    return values.astype(np.float64).reshape(tensor.shape)


def _json_values(tensor: RequestTensor, layout: str) -> Values:
    try:
        values = np.asarray(tensor.data)
    except ValueError:
        raise InvalidTensorError(f"input {tensor.name!r}: data is not a regular array of numbers") from None
    # numpy reads JSON true as 1: booleans are found among the elements themselves.
    if values.dtype.kind not in "iuf" or any(
        isinstance(value, bool) for value in np.asarray(tensor.data, dtype=object).reshape(-1)
    ):
        raise InvalidTensorError(
            f"input {tensor.name!r} holds values that are not numbers (a JSON client may write NaN as null)"
        )
    flat = values.reshape(-1)
    if layout.startswith("<i") and not np.array_equal(flat, np.trunc(flat)):
        raise InvalidTensorError(f"input {tensor.name!r} is {tensor.datatype} but holds fractions")
    # JSON numbers of an FP32 tensor are what the client meant as 32-bit floats.
    return flat.astype(layout)


class RowReader:
    """Request tensors into validated float64 rows in the model's column order.

    The same hard limits as ``/predict`` (:mod:`contracts.request`): finite numbers, the contract's
    bounds, whole numbers for integer features, at most ``max_rows`` rows.
    """

    def __init__(self, contract: ModelContract, model_columns: Sequence[str], max_rows: int) -> None:
        self.names = contract.feature_names
        self.order = [self.names.index(name) for name in model_columns]
        self.minimum = np.array([_bound(f.minimum, -math.inf) for f in contract.features])
        self.maximum = np.array([_bound(f.maximum, math.inf) for f in contract.features])
        self.integer = np.array([f.type == "integer" for f in contract.features])
        self.max_rows = max_rows

    def rows(self, request: InferenceRequest, binary: BinaryData) -> npt.NDArray[np.float64]:
        content_type = (request.parameters or {}).get("content_type")
        if content_type not in (None, "np", COLUMNS):
            raise InvalidTensorError(
                f"content_type {content_type!r} is not served; use np (one tensor) or pd"
            )
        inputs = request.inputs
        one_tensor = content_type != COLUMNS and len(inputs) == 1 and inputs[0].name == TENSOR_INPUT
        rows = self._tensor(inputs[0], binary) if one_tensor else self._columns(inputs, binary)
        binary.check_consumed()
        self._check(rows)
        return rows[:, self.order]

    def _tensor(self, tensor: RequestTensor, binary: BinaryData) -> npt.NDArray[np.float64]:
        width = len(self.names)
        shape = tensor.shape
        if len(shape) != 2 or shape[1] != width:
            raise InvalidTensorError(
                f"input {tensor.name!r} has shape {shape}; send [N, {width}] (features in the "
                "order of the model metadata)"
            )
        self._check_count(shape[0])
        return tensor_values(tensor, binary)

    def _columns(self, inputs: list[RequestTensor], binary: BinaryData) -> npt.NDArray[np.float64]:
        names = [tensor.name for tensor in inputs]
        unknown = [name for name in names if name not in self.names]
        if unknown:
            raise InvalidTensorError(
                f"unknown input(s) {_listed(unknown)}: send one tensor {TENSOR_INPUT!r} of shape "
                f"[N, {len(self.names)}], or one input per feature (content_type pd): {_listed(self.names)}"
            )
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise InvalidTensorError(f"input(s) sent more than once: {_listed(repeated)}")
        missing = [name for name in self.names if name not in names]
        if missing:
            raise InvalidTensorError(f"missing feature input(s): {_listed(missing)}")
        for tensor in inputs:
            if len(tensor.shape) not in (1, 2) or tensor.shape[1:] not in ([], [1]):
                raise InvalidTensorError(
                    f"input {tensor.name!r} has shape {tensor.shape}; send [N] or [N, 1]"
                )
        counts = {tensor.shape[0] for tensor in inputs}
        if len(counts) != 1:
            raise InvalidTensorError(f"feature inputs have different row counts: {sorted(counts)}")
        self._check_count(counts.pop())
        # Decoded in request order: binary data follows the inputs' order.
        columns = {tensor.name: tensor_values(tensor, binary).reshape(-1) for tensor in inputs}
        return np.column_stack([columns[name] for name in self.names])

    def _check_count(self, count: int) -> None:
        if not 1 <= count <= self.max_rows:
            raise InvalidTensorError(f"send between 1 and {self.max_rows} rows, got {count}")

    def _check(self, rows: npt.NDArray[np.float64]) -> None:
        for what, bad in (
            ("a finite number", ~np.isfinite(rows)),
            ("within the feature's bounds", (rows < self.minimum) | (rows > self.maximum)),
            ("a whole number", self.integer & (rows != np.floor(rows))),
        ):
            if bad.any():
                row, column = (int(index[0]) for index in np.nonzero(bad))
                raise InvalidTensorError(
                    f"row {row}, feature {self.names[column]!r}: {rows[row, column]} is not {what} "
                    f"(bounds [{self.minimum[column]}, {self.maximum[column]}])"
                )


def _bound(value: float | None, default: float) -> float:
    return default if value is None else value


def _listed(names: Sequence[str]) -> str:
    shown = ", ".join(repr(name) for name in names[:NAMES_SHOWN])
    return shown + (f" and {len(names) - NAMES_SHOWN} more" if len(names) > NAMES_SHOWN else "")


@dataclass(frozen=True)
class OutputTensor:
    """One output of the model: its metadata and how its values come from the model's raw outputs."""

    name: str
    datatype: str
    row_shape: tuple[int, ...]
    values: Callable[[Outputs], Values]

    def metadata(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": [-1, *self.row_shape]}

    def encode(self, outputs: Outputs, binary: bool) -> tuple[dict[str, Any], bytes | None]:
        """The response's ``$response_output``, and its raw bytes when sent as binary data."""
        values = self.values(outputs)
        entry: dict[str, Any] = {
            "name": self.name,
            "datatype": self.datatype,
            "shape": [outputs.shape[0], *self.row_shape],
        }
        if not binary:
            entry["data"] = values.reshape(-1).tolist()
            return entry, None
        if self.datatype == "BYTES":
            encoded = [str(value).encode() for value in values.reshape(-1)]
            raw = b"".join(struct.pack("<I", len(item)) + item for item in encoded)
        else:
            raw = values.astype(NUMERIC[self.datatype]).tobytes()
        entry["parameters"] = {"binary_data_size": len(raw)}
        return entry, raw


def output_tensors(contract: ModelContract) -> list[OutputTensor]:
    """A regressor's predictions; a classifier's labels and class probabilities."""
    if contract.task == "regression":
        return [OutputTensor(PREDICTION, "FP64", (), lambda outputs: outputs)]
    labels = np.array(contract.class_labels, dtype=object)
    return [
        OutputTensor(PREDICTION, "BYTES", (), lambda outputs: labels[np.argmax(outputs, axis=1)]),
        OutputTensor(PROBABILITIES, "FP64", (len(labels),), lambda outputs: outputs),
    ]


def model_metadata(api: PredictionAPI) -> dict[str, Any]:
    """``$metadata_model_response``, plus the contract's features (the per-feature inputs) and labels."""
    contract = api.model.contract
    features = [
        {
            "name": feature.name,
            "datatype": "INT64" if feature.type == "integer" else "FP64",
            "shape": [-1],
            "description": feature.description,
            **{
                key: getattr(feature, key)
                for key in ("minimum", "maximum")
                if getattr(feature, key) is not None
            },
        }
        for feature in contract.features
    ]
    metadata: dict[str, Any] = {
        "name": api.model.info.name,
        "versions": [api.model.info.version],
        "platform": PLATFORM,
        "inputs": [{"name": TENSOR_INPUT, "datatype": "FP64", "shape": [-1, len(features)]}],
        "outputs": [tensor.metadata() for tensor in output_tensors(contract)],
        "parameters": {"task": contract.task, "target": contract.target, "description": contract.description},
        "features": features,
    }
    if contract.class_labels:
        metadata["class_labels"] = list(contract.class_labels)
    return metadata


@dataclass(frozen=True)
class Resolved:
    """The handler of one request, and its route label (``None``: a path this protocol does not serve)."""

    label: str | None
    handler: Handler


def _json(body: dict[str, Any], status_code: int = 200) -> Response:
    return Response(json.dumps(body), status_code=status_code, media_type="application/json")


def inference_internal_error() -> Response:
    """The protocol's 500 for an unexpected fault (logged and counted by the app)."""
    return inference_error_response(
        InternalError("unexpected error while answering the request; it is logged")
    )


def _error(error: ServiceError) -> Handler:
    async def answer(request: Request) -> Response:
        return inference_error_response(error)

    return answer


class InferenceProtocol:
    """Routes ``/v2`` requests to their handlers; the app asks it first (see ``service.app``)."""

    def __init__(self, get_api: Callable[[], PredictionAPI | None]) -> None:
        self.get_api = get_api
        self._cached: tuple[PredictionAPI, RowReader, list[OutputTensor]] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """ASGI entry, for routes that declare ``/v2`` (every ``/v2`` path resolves to a handler)."""
        resolved = self.resolve(scope["method"], scope["path"])
        handler = (
            _error(NotFoundError("not an Open Inference Protocol path"))
            if resolved is None
            else resolved.handler
        )
        response = await handler(Request(scope, receive))
        await response(scope, receive, send)

    @staticmethod
    def serves(path: str) -> bool:
        """Whether ``path`` is one of the protocol's: ``/v2`` and every path below it."""
        return path == "/v2" or path.startswith("/v2/")

    def resolve(self, method: str, path: str) -> Resolved | None:
        if not self.serves(path):
            return None
        parts = path.split("/")[2:]
        if parts[:1] == ["health"] and len(parts) == 2 and parts[1] in ("live", "ready"):
            return self._get(
                method, f"/v2/health/{parts[1]}", self._live if parts[1] == "live" else self._ready
            )
        if not parts:
            return self._get(method, "/v2", self._server_metadata)
        if parts[0] == "models" and len(parts) >= 2:
            name, rest, version = parts[1], parts[2:], None
            template = "/v2/models/{name}"
            if rest[:1] == ["versions"] and len(rest) >= 2:
                version, rest = rest[1], rest[2:]
                template += "/versions/{version}"
            if not rest:
                return self._get(method, template, partial(self._model_metadata, name=name, version=version))
            if rest == ["ready"]:
                return self._get(
                    method, template + "/ready", partial(self._model_ready, name=name, version=version)
                )
            if rest == ["infer"]:
                label = template + "/infer"
                if method != "POST":
                    return Resolved(label, _error(MethodNotAllowedError(f"{label} takes POST", ("POST",))))
                return Resolved(label, partial(self._infer, name=name, version=version, label=label))
        return Resolved(None, _error(NotFoundError(f"no such Open Inference Protocol path: {path}")))

    @staticmethod
    def _get(method: str, label: str, handler: Handler) -> Resolved:
        if method not in ("GET", "HEAD"):
            return Resolved(label, _error(MethodNotAllowedError(f"{label} takes GET", ("GET", "HEAD"))))
        return Resolved(label, handler)

    async def _live(self, request: Request) -> Response:
        return _json({"live": True})

    async def _ready(self, request: Request) -> Response:
        api = self.get_api()
        ready = api is not None and api.ready
        return _json({"ready": ready}, 200 if ready else 503)

    async def _server_metadata(self, request: Request) -> Response:
        return _json({"name": SERVER_NAME, "version": SERVER_VERSION, "extensions": [BINARY_EXTENSION]})

    def _served(self, name: str, version: str | None) -> PredictionAPI:
        """The API serving model ``name`` (at ``version``, if given); else the error to answer."""
        api = self.get_api()
        if api is None:
            raise ModelUnavailableError("no model loaded, see the service log")
        info = api.model.info
        if name != info.name:
            raise NotFoundError(f"unknown model {name!r}; this server serves {info.name!r}")
        if version is not None and version != info.version:
            raise NotFoundError(
                f"model {name!r} has no version {version!r}; it serves version {info.version!r}"
            )
        return api

    async def _model_metadata(self, request: Request, name: str, version: str | None) -> Response:
        try:
            api = self._served(name, version)
        except ServiceError as error:
            return inference_error_response(error)
        return _json(model_metadata(api))

    async def _model_ready(self, request: Request, name: str, version: str | None) -> Response:
        try:
            api = self._served(name, version)
        except ServiceError as error:
            return inference_error_response(error)
        return _json({"name": name, "ready": api.ready}, 200 if api.ready else 503)

    async def _infer(self, request: Request, name: str, version: str | None, label: str) -> Response:
        try:
            api = self._served(name, version)
        except ServiceError as error:
            return inference_error_response(error)
        header_length = request.headers.get(HEADER_LENGTH)
        reader, outputs = self._reader(api)

        async def answer(body: bytes, started: float) -> ProtocolAnswer:
            parsed, binary = parse_request(body, header_length)
            rows = reader.rows(parsed, binary)
            selected = _selected_outputs(parsed, outputs)
            answered = await api.answer_rows(label, started, rows, batch=True)
            parameters: dict[str, Any] = {"prediction_id": answered.prediction_id}
            if answered.warnings:
                # Parameters hold only strings, numbers and booleans: the warnings travel as JSON text.
                parameters["warnings"] = json.dumps([warning.model_dump() for warning in answered.warnings])
            entries, chunks = [], []
            for tensor, binary_output in selected:
                entry, raw = tensor.encode(answered.outputs, binary_output)
                entries.append(entry)
                if raw is not None:
                    chunks.append(raw)
            header = json.dumps(
                {
                    "model_name": api.model.info.name,
                    "model_version": api.model.info.version,
                    "id": parsed.id if parsed.id is not None else answered.prediction_id,
                    "parameters": parameters,
                    "outputs": entries,
                }
            ).encode()
            if not chunks:
                response = Response(header, media_type="application/json")
            else:
                response = Response(
                    b"".join([header, *chunks]),
                    media_type="application/octet-stream",
                    headers={"Inference-Header-Content-Length": str(len(header))},
                )
            return ProtocolAnswer(response, rows, answered)

        return await api.serve(request, answer, INFERENCE_WIRE)

    def _reader(self, api: PredictionAPI) -> tuple[RowReader, list[OutputTensor]]:
        """Built once per loaded model (its contract and the batch limit do not change)."""
        if self._cached is None or self._cached[0] is not api:
            contract = api.model.contract
            reader = RowReader(contract, api.model.feature_names, api.settings.max_batch_rows)
            self._cached = (api, reader, output_tensors(contract))
        return self._cached[1], self._cached[2]


def _selected_outputs(
    request: InferenceRequest, outputs: list[OutputTensor]
) -> list[tuple[OutputTensor, bool]]:
    """The outputs to answer and whether each goes as binary data (request default, output override)."""
    binary_default = (request.parameters or {}).get("binary_data_output", False)
    if not isinstance(binary_default, bool):
        raise InvalidTensorError("parameter binary_data_output must be true or false")
    if request.outputs is None:
        return [(tensor, binary_default) for tensor in outputs]
    by_name = {tensor.name: tensor for tensor in outputs}
    selected = []
    for requested in request.outputs:
        tensor = by_name.get(requested.name)
        if tensor is None:
            raise InvalidTensorError(
                f"unknown output {requested.name!r}; the model answers {_listed(list(by_name))}"
            )
        parameters = requested.parameters or {}
        if parameters.get("class_count", 0):
            raise InvalidTensorError(
                "the classification extension (class_count) is not served; request the probabilities output"
            )
        binary = parameters.get("binary_data", binary_default)
        if not isinstance(binary, bool):
            raise InvalidTensorError(f"output {requested.name!r}: binary_data must be true or false")
        selected.append((tensor, binary))
    return selected
