"""The OpenAPI 3.1 document of ``/api/v1``, made from the app itself; served at
``GET /api/v1/openapi.json``.

It is the API's contract, so nothing in it is a second copy of what the code decides:

- **the paths** are the app's URL rules under ``/api/v1`` (``app.url_map``), their path
  parameters read off each rule (``<int:iteration>`` is an integer from 0);
- **what each view says** (summary, query and header parameters, request body, its own
  responses) is its entry in ``web/openapi_operations.py``, by endpoint name. A rule
  without an entry, or an entry without a rule, stops the build (:class:`Undocumented`),
  so a new route cannot ship undocumented;
- **the job parameters** (``POST /jobs``'s multipart fields, with this server's ranges)
  come from the parameter table (``web/param_schema.py``); the job JSON's schema is
  ``web/job_schema.py``, the error body's ``web/errors.py``;
- **security** follows ``web/auth.py``: public endpoints need nothing, ``admin_only``
  views an admin token or the ``/fleet`` sign-in, every other view takes a bearer token
  or the session cookie (plus the CSRF header on writes) or nothing at all (a caller with
  no owner id owns no job);
- **the responses every view shares** are added here: 401 for an unknown or malformed
  bearer token, 403 for a cookie write without its CSRF token, 404 for an unknown id,
  413 for a write's body over the size or form-part limits, 429 (with ``Retry-After``)
  once an address is over its refused-credentials rate limit (``web/limits.py``: every
  request that presents a credential, on any path), 503 when the database, Redis or
  storage cannot be reached.

The document is built once per app, at the first request for it (the URL map is complete
by then), with the app's Limits.
"""

from __future__ import annotations

import copy
import re
from typing import Any

from flask import Blueprint, Flask, Response, current_app, jsonify
from werkzeug.routing import Rule

from stylequeue.shared.settings import Limits
from stylequeue.web import auth
from stylequeue.web.errors import ERROR_SCHEMA
from stylequeue.web.job_schema import JOB_SCHEMA
from stylequeue.web.openapi_operations import OPERATIONS, RETRY_AFTER, SCHEMAS, error, header
from stylequeue.web.param_schema import submission_schema

API_PREFIX = "/api/v1"
OPENAPI_VERSION = "3.1.0"
EXTENSION_KEY = "stylequeue_openapi"
UNSAFE = frozenset({"POST", "PUT", "PATCH", "DELETE"})
NOT_DOCUMENTED_METHODS = frozenset({"HEAD", "OPTIONS"})  # Flask's own, on every GET rule
# <converter(args):name> or <name> in a Werkzeug rule
_RULE_ARG = re.compile(r"<(?:(?P<converter>[a-zA-Z_]\w*)(?:\([^)]*\))?:)?(?P<name>\w+)>")
PATH_PARAMETERS: dict[str, str] = {
    "job_id": "the job's id (a UUID); someone else's job is a 404 like an unknown id",
    "iteration": "the iteration of a snapshot (links.snapshots lists them)",
    "index": "which style image, from 0",
}
_CONVERTERS: dict[str, dict[str, Any]] = {
    "default": {"type": "string"},
    "string": {"type": "string"},
    "int": {"type": "integer", "minimum": 0},
}

SECURITY_SCHEMES: dict[str, Any] = {
    "bearerToken": {
        "type": "http",
        "scheme": "bearer",
        "description": "an API token (STYLEQUEUE_API_TOKENS): jobs belong to api:<name>",
    },
    "sessionCookie": {
        "type": "apiKey",
        "in": "cookie",
        "name": "stylequeue_session",
        "description": "the browser's signed session (an owner id, made by GET /session)",
    },
    "csrfHeader": {
        "type": "apiKey",
        "in": "header",
        "name": auth.CSRF_HEADER,
        "description": "the session's CSRF token (GET /session), on every cookie write",
    },
    "adminToken": {
        "type": "http",
        "scheme": "bearer",
        "description": "an operator's token (STYLEQUEUE_ADMIN_TOKENS), never an API token",
    },
}
Security = list[dict[str, list[str]]]
OWNER_READ: Security = [{"bearerToken": []}, {"sessionCookie": []}, {}]
OWNER_WRITE: Security = [{"bearerToken": []}, {"sessionCookie": [], "csrfHeader": []}]
ADMIN: Security = [{"adminToken": []}, {"sessionCookie": []}]

bp = Blueprint("openapi", __name__, url_prefix=API_PREFIX)


class Undocumented(RuntimeError):
    """A route under /api/v1 without its entry in OPERATIONS, or an entry without a route."""


@bp.get("/openapi.json")
def openapi_json() -> Response:
    """The document, with this server's limits; public (it is the contract)."""
    return jsonify(document_for(current_app))


def document_for(app: Flask) -> dict[str, Any]:
    """``app``'s document, built at the first call (its URL map is complete by then)."""
    document: dict[str, Any] | None = app.extensions.get(EXTENSION_KEY)
    if document is None:
        settings = app.config["STYLEQUEUE_SETTINGS"]
        document = app.extensions[EXTENSION_KEY] = openapi_document(app, settings.limits)
    return document


def openapi_document(app: Flask, limits: Limits) -> dict[str, Any]:
    """The whole document for ``app`` (its routes) and ``limits`` (its ranges)."""
    paths: dict[str, dict[str, Any]] = {}
    documented: set[str] = set()
    for rule in sorted(api_rules(app), key=lambda r: r.rule):
        entry = OPERATIONS.get(rule.endpoint)
        if entry is None:
            raise Undocumented(
                f"{rule.rule} ({rule.endpoint}) has no entry in web/openapi_operations.py"
            )
        documented.add(rule.endpoint)
        path, parameters = openapi_path(rule)
        for method in sorted(api_methods(rule)):
            operation = _operation(app, rule, method, entry, parameters)
            paths.setdefault(path, {})[method.lower()] = operation
    extra = set(OPERATIONS) - documented
    if extra:
        raise Undocumented(f"entries without a route: {', '.join(sorted(extra))}")
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "stylequeue",
            "version": "1",
            "description": (
                "Neural style transfer as a service: submit a photo and a painting, follow "
                "the job, fetch the picture. Errors are JSON {error: {code, message, "
                "field?}}; a refused request stores nothing."
            ),
        },
        "tags": [{"name": n} for n in ("jobs", "images", "session", "fleet", "webhooks")],
        "paths": paths,
        "components": {
            "schemas": {
                "Error": ERROR_SCHEMA,
                "Job": JOB_SCHEMA,
                "JobSubmission": submission_schema(limits),
                **SCHEMAS,
            },
            "securitySchemes": SECURITY_SCHEMES,
        },
    }


def api_rules(app: Flask) -> list[Rule]:
    return [r for r in app.url_map.iter_rules() if r.rule.startswith(API_PREFIX + "/")]


def api_methods(rule: Rule) -> set[str]:
    return set(rule.methods or ()) - NOT_DOCUMENTED_METHODS


def openapi_path(rule: Rule) -> tuple[str, list[dict[str, Any]]]:
    """``/jobs/<int:iteration>`` -> ``/jobs/{iteration}`` and its parameter objects."""
    parameters: list[dict[str, Any]] = []

    def replace(match: re.Match[str]) -> str:
        name, converter = match["name"], match["converter"] or "default"
        if converter not in _CONVERTERS:
            raise Undocumented(f"{rule.rule}: no schema for the {converter!r} converter")
        parameters.append(
            {
                "name": name,
                "in": "path",
                "required": True,
                "schema": _CONVERTERS[converter],
                "description": PATH_PARAMETERS.get(name, name),
            }
        )
        return "{" + name + "}"

    return _RULE_ARG.sub(replace, rule.rule), parameters


def _security(app: Flask, rule: Rule, method: str) -> Security:
    if rule.endpoint in auth.PUBLIC_ENDPOINTS:
        return []
    if getattr(app.view_functions.get(rule.endpoint), auth.ADMIN_VIEW_FLAG, False):
        return ADMIN
    return OWNER_WRITE if method in UNSAFE else OWNER_READ


def _operation(
    app: Flask, rule: Rule, method: str, entry: dict[str, Any], path_params: list[dict[str, Any]]
) -> dict[str, Any]:
    operation = copy.deepcopy(entry)
    operation["operationId"] = rule.endpoint.rpartition(".")[2]
    security = _security(app, rule, method)
    operation["security"] = security
    operation["parameters"] = path_params + operation.get("parameters", [])
    responses: dict[str, Any] = operation.setdefault("responses", {})
    if security:
        responses.setdefault(
            "401",
            error(
                "an Authorization header with an unknown or malformed token",
                headers={"WWW-Authenticate": header("Bearer")},
            ),
        )
    if method in UNSAFE:
        responses.setdefault("403", error("a cookie write without the session's CSRF token"))
        responses.setdefault(
            "413", error("the body is too large, or a form with too many parts (too_many_parts)")
        )
    if path_params:
        responses.setdefault("404", error("no such job for this caller"))
    responses.setdefault(
        "429",
        error(
            "too many refused credentials from this address (rate_limited): every request "
            "that presents one waits until Retry-After",
            headers=RETRY_AFTER,
        ),
    )
    responses.setdefault("503", error("the database, Redis or storage cannot be reached now"))
    return operation
