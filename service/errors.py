"""Client errors of the prediction API and their one mapping to HTTP responses."""

from __future__ import annotations

import json
from collections.abc import Callable

from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import Response

from contracts.errors import ProductError
from service.schemas import ErrorBody, ErrorDetail, ErrorInfo, details_from


class ServiceError(ProductError):
    """An error answered with ``http_status`` and the structured body of docs/architecture.md."""

    http_status = 400
    error_type = "bad_request"

    def __init__(self, message: str, details: list[ErrorDetail] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or []


class InvalidJsonError(ServiceError):
    http_status = 400
    error_type = "invalid_json"


class PayloadTooLargeError(ServiceError):
    http_status = 413
    error_type = "payload_too_large"


class UnsupportedMediaTypeError(ServiceError):
    http_status = 415
    error_type = "unsupported_media_type"


class InvalidInputError(ServiceError):
    http_status = 422
    error_type = "validation_error"


class RequestTimeoutError(ServiceError):
    """The request's body did not arrive within the request timeout: the client's delay (RFC 9110, 408)."""

    http_status = 408
    error_type = "request_timeout"


class OverloadedError(ServiceError):
    http_status = 503
    error_type = "overloaded"


class ModelUnavailableError(ServiceError):
    """The worker runs without a model: it failed to load (see the log); the pod never becomes ready."""

    http_status = 503
    error_type = "model_unavailable"


class InvalidTensorError(ServiceError):
    """An Open Inference Protocol request whose tensors do not fit the model (the protocol answers 400)."""

    http_status = 400
    error_type = "invalid_tensor"


class NotFoundError(ServiceError):
    """An unknown model, model version or Open Inference Protocol path."""

    http_status = 404
    error_type = "not_found"


class MethodNotAllowedError(ServiceError):
    """A method the path does not serve; ``allowed`` lists the ones it does (RFC 9110's ``Allow``)."""

    http_status = 405
    error_type = "method_not_allowed"

    def __init__(self, message: str, allowed: tuple[str, ...]) -> None:
        super().__init__(message)
        self.allowed = allowed


class InternalError(ServiceError):
    """An unexpected fault: answered at once, logged once with its traceback, counted as a 500."""

    http_status = 500
    error_type = "internal_error"


def from_validation_error(error: ValidationError) -> ServiceError:
    """Malformed JSON is a 400; well-formed JSON that breaks the schema is a 422."""
    details = details_from(error)
    if any(detail.constraint == "json_invalid" for detail in details):
        return InvalidJsonError("request body is not valid JSON", details)
    return InvalidInputError(f"{len(details)} invalid field(s)", details)


def structured_body(error: ServiceError) -> str:
    """Our API's error body: ``{"error": {"type", "message", "details"}}`` (docs/architecture.md)."""
    return ErrorBody(
        error=ErrorInfo(type=error.error_type, message=error.message, details=error.details)
    ).model_dump_json()


def inference_body(error: ServiceError) -> str:
    """The Open Inference Protocol's error body: ``{"error": "<message>"}``."""
    return json.dumps({"error": error.message})


def error_response(error: ServiceError, body: Callable[[ServiceError], str] = structured_body) -> Response:
    """The one place an error becomes an HTTP answer: its ``http_status``, ``Retry-After`` on a 503,
    ``Allow`` on a 405, ``Connection: close`` on a 408, and the body of the protocol it is answered in."""
    headers: dict[str, str] = {}
    if error.http_status == 503:
        headers["Retry-After"] = "1"
    if isinstance(error, RequestTimeoutError):
        # The rest of the body may still come: the connection cannot carry another request (RFC 9110).
        headers["Connection"] = "close"
    if isinstance(error, MethodNotAllowedError):
        headers["Allow"] = ", ".join(error.allowed)
    return Response(
        body(error), status_code=error.http_status, media_type="application/json", headers=headers
    )


def inference_error_response(error: ServiceError) -> Response:
    return error_response(error, inference_body)


async def read_json_body(request: Request, max_bytes: int) -> bytes:
    """The raw body of a JSON request, refused early when too large or not declared as JSON."""
    media_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media_type != "application/json":
        raise UnsupportedMediaTypeError(
            "send the body as application/json",
            [
                ErrorDetail(
                    field=None,
                    constraint="content_type",
                    value=media_type or None,
                    message="expected application/json",
                )
            ],
        )
    return await read_body(request, max_bytes)


async def read_body(request: Request, max_bytes: int) -> bytes:
    """The raw body of a request, whatever its media type, refused early when too large or empty."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise _too_large(int(declared), max_bytes)
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > max_bytes:
            raise _too_large(len(body), max_bytes)
    if not body:
        raise InvalidJsonError(
            "request body is empty",
            [ErrorDetail(field=None, constraint="json_invalid", value=None, message="empty body")],
        )
    return bytes(body)


def _too_large(size: int, max_bytes: int) -> PayloadTooLargeError:
    return PayloadTooLargeError(
        f"request body over {max_bytes} bytes",
        [ErrorDetail(field=None, constraint="max_bytes", value=size, message=f"at most {max_bytes} bytes")],
    )
