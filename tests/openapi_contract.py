"""Every API response the tests see is checked against the OpenAPI document (openapi-core).

:class:`ContractClient` is the Flask test client the web tests get from every
``app.test_client()`` (``tests/web/conftest.py`` installs it); :func:`check_requests_response`
does the same for the ``requests`` sessions of the integration tests. A response that
contradicts the document (an undocumented status, a body or header off its schema, a job
JSON key the schema does not know) fails the test that made it, with openapi-core's reason.

A request under ``/api/v1`` that matches no documented operation (an unknown path, a
method the route does not take) must still answer an error in the documented shape.
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import requests
from flask import Flask
from flask.testing import FlaskClient
from openapi_core import OpenAPI
from openapi_core.contrib.requests import RequestsOpenAPIRequest, RequestsOpenAPIResponse
from openapi_core.contrib.werkzeug import WerkzeugOpenAPIRequest, WerkzeugOpenAPIResponse
from openapi_core.templating.paths.exceptions import PathError
from werkzeug.test import TestResponse

from stylequeue.web.errors import ERROR_SCHEMA
from stylequeue.web.openapi import API_PREFIX, document_for


class ContractViolation(AssertionError):
    pass


class _SentRequest(WerkzeugOpenAPIRequest):
    """The request as openapi-core finds the operation by it; its body was read already
    (and a response is checked without it)."""

    @property
    def body(self) -> bytes:
        return b""


@lru_cache(maxsize=16)
def _spec(document_json: str) -> OpenAPI:
    return OpenAPI.from_dict(json.loads(document_json))


def spec_of(document: dict[str, Any]) -> OpenAPI:
    """openapi-core's validator for ``document`` (built once per distinct document)."""
    return _spec(json.dumps(document, sort_keys=True))


def _check_error_shape(method: str, path: str, status: int, body: bytes) -> None:
    if status < 400:
        raise ContractViolation(f"{method} {path}: {status} from an undocumented operation")
    try:
        jsonschema.validate(json.loads(body), ERROR_SCHEMA)
    except (ValueError, jsonschema.ValidationError) as exc:
        raise ContractViolation(f"{method} {path} -> {status}: not an error body: {exc}") from None


def _validate(spec: OpenAPI, request: Any, response: Any, method: str, path: str, status: int,
              body: bytes) -> None:  # fmt: skip
    try:
        spec.validate_response(request, response)
    except PathError:  # no such path, or no such method on it
        _check_error_shape(method, path, status, body)
    except Exception as exc:
        errors = getattr(exc, "schema_errors", None) or getattr(
            exc.__cause__, "schema_errors", None
        )
        reason = "; ".join(f"{e.message} at {list(e.absolute_path)}" for e in errors or ())
        raise ContractViolation(
            f"{method} {path} -> {status} contradicts the OpenAPI document: "
            f"{type(exc).__name__}: {reason or str(exc)[:500]}; body {body[:200]!r}"
        ) from exc


def check_flask_response(app: Flask, response: TestResponse) -> None:
    request = response.request
    if not request.path.startswith(API_PREFIX + "/"):
        return
    _validate(
        spec_of(document_for(app)),
        _SentRequest(request),
        WerkzeugOpenAPIResponse(response),
        request.method,
        request.path,
        response.status_code,
        response.get_data(),
    )


class ContractClient(FlaskClient):
    """The Flask test client, with every ``/api/v1`` response checked against the app's
    own OpenAPI document."""

    def open(self, *args: Any, **kwargs: Any) -> TestResponse:
        response = super().open(*args, **kwargs)
        check_flask_response(self.application, response)
        return response


def check_requests_response(document: dict[str, Any], response: Any) -> None:
    """The same check for a ``requests`` response from a live server (read in full)."""
    path = urlsplit(response.request.url).path
    if not path.startswith(API_PREFIX + "/"):
        return
    _validate(
        spec_of(document),
        RequestsOpenAPIRequest(response.request),
        RequestsOpenAPIResponse(response),
        response.request.method,
        path,
        response.status_code,
        response.content,
    )


class RequestsContract:
    """Patches ``requests.Session.request`` so that every response from a server's
    ``/api/v1`` (not streamed: its body is the caller's to read) is checked against that
    server's own document, fetched once per server."""

    def __init__(self) -> None:
        self.documents: dict[str, dict[str, Any]] = {}
        self.real = requests.Session.request

    def document(self, url: str) -> dict[str, Any]:
        parts = urlsplit(url)
        origin = f"{parts.scheme}://{parts.netloc}"
        if origin not in self.documents:
            answer = self.real(requests.Session(), "GET", f"{origin}{API_PREFIX}/openapi.json")
            self.documents[origin] = answer.json()
        return self.documents[origin]

    def install(self, monkeypatch: Any) -> None:
        contract = self

        def request(session: requests.Session, method: str, url: str, *args: Any,
                    **kwargs: Any) -> requests.Response:  # fmt: skip
            response = contract.real(session, method, url, *args, **kwargs)
            if not kwargs.get("stream") and urlsplit(url).path.startswith(API_PREFIX + "/"):
                check_requests_response(contract.document(url), response)
            return response

        monkeypatch.setattr(requests.Session, "request", request)
