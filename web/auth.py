"""Who is calling, and CSRF protection for cookie-authenticated writes.

Two kinds of callers own jobs:

* a browser: a random owner id ``web:<hex>`` kept in Flask's signed session cookie, created
  the first time it is needed (``GET /api/v1/session``, a page render, or any use of
  :func:`csrf_token`);
* an API client: ``Authorization: Bearer <token>``, looked up in ``settings.api_tokens``
  (owner ``api:<name>``). A header that is present but unknown or malformed is a 401, never a
  silent fall-back to the cookie.

Unsafe requests (POST, PUT, PATCH, DELETE) authenticated by the cookie must carry the
session's CSRF token in the ``X-CSRF-Token`` header or a ``csrf_token`` form field; bearer
requests are exempt (a browser never adds that header by itself).
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass
from typing import Literal

from flask import g, request, session

from stylequeue.web.errors import ApiError
from stylequeue.web.extensions import services

OWNER_KEY = "owner"
CSRF_KEY = "csrf"
CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf_token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
# Endpoints that need no caller at all (probes, static files), and /metrics, which checks its
# own token (STYLEQUEUE_METRICS_TOKEN, not an API token: web/metrics.py).
PUBLIC_ENDPOINTS = frozenset({"health.healthz", "health.readyz", "metrics.metrics", "static"})


@dataclass(frozen=True)
class Caller:
    owner: str | None  # None: a browser that has no owner id yet (owns nothing)
    via: Literal["token", "session"]


def _token_owner(token: str) -> str | None:
    """Constant-time lookup, so response timing does not leak how much of a token matched."""
    found = None
    for known, owner in services().settings.api_tokens.items():
        if hmac.compare_digest(known.encode(), token.encode()):
            found = owner
    return found


def _unauthorized(message: str) -> ApiError:
    return ApiError(401, "unauthorized", message, headers={"WWW-Authenticate": "Bearer"})


def current_caller() -> Caller:
    """The caller of this request (cached on ``g``); raises 401 for a bad bearer token."""
    cached = g.get("stylequeue_caller")
    if cached is not None:
        return cached
    header = request.headers.get("Authorization")
    if header is not None:
        scheme, _, token = header.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise _unauthorized("use 'Authorization: Bearer <token>'")
        owner = _token_owner(token)
        if owner is None:
            raise _unauthorized("unknown API token")
        caller = Caller(owner, "token")
    else:
        caller = Caller(session.get(OWNER_KEY), "session")
    g.stylequeue_caller = caller
    return caller


def current_owner() -> str | None:
    """The owner id of this request, or None for a browser without one yet. Never creates."""
    return current_caller().owner


def ensure_session_owner() -> str:
    """The browser's owner id, created (with its CSRF token) on first need."""
    if OWNER_KEY not in session or CSRF_KEY not in session:
        session.permanent = True
        session[OWNER_KEY] = session.get(OWNER_KEY) or f"web:{secrets.token_hex(16)}"
        session[CSRF_KEY] = secrets.token_urlsafe(32)
        g.pop("stylequeue_caller", None)
    return session[OWNER_KEY]


def csrf_token() -> str:
    """This browser session's CSRF token (creating the session owner if needed)."""
    ensure_session_owner()
    return session[CSRF_KEY]


def _check_csrf() -> None:
    expected = session.get(CSRF_KEY)
    given = request.headers.get(CSRF_HEADER)
    if not given and request.mimetype in (
        "multipart/form-data",
        "application/x-www-form-urlencoded",
    ):
        given = request.form.get(CSRF_FIELD)  # may raise 413 for an oversize body: fine
    if not expected or not given:
        raise ApiError(
            403,
            "csrf_failed",
            f"missing CSRF token: send the {CSRF_HEADER} header (from GET /api/v1/session)",
        )
    if not hmac.compare_digest(str(expected).encode(), given.encode()):
        raise ApiError(403, "csrf_failed", "the CSRF token does not match this session")


def protect() -> None:
    """``before_request``: authenticate (401 for bad tokens) and enforce CSRF on writes."""
    if request.routing_exception is not None or request.endpoint in PUBLIC_ENDPOINTS:
        return  # unknown path / wrong method: let routing answer 404 / 405
    caller = current_caller()
    if request.method not in SAFE_METHODS and caller.via == "session":
        _check_csrf()


def template_context() -> dict[str, object]:
    """For templates: ``{{ csrf_token() }}`` (e.g. in a <meta> tag) and the owner id."""
    return {"csrf_token": csrf_token, "owner_id": ensure_session_owner}
