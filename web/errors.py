"""Errors as JSON: ``{"error": {"code", "message", "field"?}}``.

Everything under ``/api/`` (and the health and metrics endpoints) answers errors in this
shape, whatever went wrong: our own :class:`ApiError`, a Werkzeug HTTP error (404 route,
405, 413 from ``MAX_CONTENT_LENGTH``) or an unexpected exception (500, logged). Other paths
keep Flask's HTML error pages unless the client asks for JSON; the pages blueprint may style
them.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import redis
from flask import Flask, Response, current_app, jsonify, request
from sqlalchemy.exc import InterfaceError, OperationalError
from werkzeug.exceptions import HTTPException, InternalServerError, ServiceUnavailable

log = logging.getLogger(__name__)

DEFAULT_CODES: dict[int, str] = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "too_large",
    415: "unsupported_media_type",
    422: "invalid",
    429: "too_many_requests",
    500: "internal_error",
    503: "unavailable",
}

JSON_PATH_PREFIXES = ("/api/", "/healthz", "/readyz", "/metrics")


class ApiError(Exception):
    """An error the client should see: status, machine code, readable message, field."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        field: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.headers = dict(headers or {})


def error_response(
    status: int,
    code: str,
    message: str,
    field: str | None = None,
    headers: Mapping[str, str] | None = None,
    **extra: object,
) -> Response:
    body: dict[str, object] = {"code": code, "message": message}
    if field is not None:
        body["field"] = field
    response = jsonify({"error": body, **extra})
    response.status_code = status
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def wants_json() -> bool:
    if request.path.startswith(JSON_PATH_PREFIXES):
        return True
    best = request.accept_mimetypes.best_match(["text/html", "application/json"])
    return best == "application/json"


def _too_large() -> tuple[str, str]:
    """413: the body over ``MAX_CONTENT_LENGTH``, or (within it) werkzeug's form limits."""
    config = current_app.config
    limit = config.get("MAX_CONTENT_LENGTH")
    if limit is None or request.content_length is None or request.content_length > limit:
        return "too_large", f"the request is too large; the limit is {limit} bytes in all"
    parts = config.get("MAX_FORM_PARTS") or 1000
    text_kb = (config.get("MAX_FORM_MEMORY_SIZE") or 500_000) // 1000
    return "too_many_parts", (
        f"the form has too many parts or too long a text field: at most {parts} parts, "
        f"each text field at most {text_kb} KB"
    )


def _http_message(exc: HTTPException) -> str:
    if exc.code == 413:
        return _too_large()[1]
    if exc.code == 404:
        return "no such resource"
    if exc.code == 405:
        return f"{request.method} is not allowed here"
    return exc.description or exc.name


def handle_api_error(exc: ApiError) -> Response:
    return error_response(exc.status, exc.code, exc.message, exc.field, exc.headers)


def handle_http_exception(exc: HTTPException) -> Response | HTTPException:
    if not wants_json():
        return exc
    status = exc.code or 500
    # Keep headers such as Allow (405) and WWW-Authenticate; the body becomes JSON.
    headers = {k: v for k, v in exc.get_headers() if k.lower() != "content-type"}
    code = _too_large()[0] if status == 413 else DEFAULT_CODES.get(status, "error")
    return error_response(status, code, _http_message(exc), headers=headers)


def handle_unexpected(exc: Exception) -> Response | HTTPException:
    log.exception("unhandled error on %s %s", request.method, request.path)
    if not wants_json():
        return InternalServerError()
    return error_response(500, "internal_error", "something went wrong on our side")


def handle_unavailable(exc: Exception) -> Response | HTTPException:
    """A backing service we could not reach: 503 (try again), not 500 (our bug)."""
    database = isinstance(exc, OperationalError | InterfaceError)
    log.warning("%s unreachable on %s %s: %s", "database" if database else "redis",
                request.method, request.path, exc)  # fmt: skip
    if not wants_json():
        return ServiceUnavailable()
    if database:
        return error_response(503, "database_unavailable", "the database cannot be reached now")
    return error_response(503, "redis_unavailable", "Redis cannot be reached now")


def register_error_handlers(app: Flask) -> None:
    app.register_error_handler(ApiError, handle_api_error)
    for unavailable in (
        OperationalError,
        InterfaceError,
        redis.ConnectionError,
        redis.TimeoutError,
    ):
        app.register_error_handler(unavailable, handle_unavailable)
    app.register_error_handler(HTTPException, handle_http_exception)
    app.register_error_handler(Exception, handle_unexpected)


# The shape above as a JSON Schema, for the OpenAPI document (web/openapi.py): one place
# says what an error body is; ``error_response`` makes every one of them.
ERROR_SCHEMA: dict[str, object] = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {
                "code": {"type": "string", "description": "machine-readable, e.g. not_found"},
                "message": {"type": "string", "minLength": 1, "description": "for people"},
                "field": {
                    "type": "string",
                    "description": "the form field, parameter or header that is wrong",
                },
            },
            "additionalProperties": False,
        }
    },
}
