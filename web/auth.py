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

Operators are a third kind of caller, for the views marked :func:`admin_only` (the fleet):

* a script sends ``Authorization: Bearer <token>`` with one of ``settings.admin_tokens``
  (``STYLEQUEUE_ADMIN_TOKENS``), or the metrics token once settings has one;
* a browser signs in once on the ``/fleet`` page: the token is typed into a form (a POST
  with the CSRF token) and checked here; the signed session cookie then keeps only the
  token's name, an HMAC of the token under the app's secret key and the time of sign-in,
  never the token itself (the cookie is signed, not encrypted). The page's script never
  sees the token: it polls with the cookie (HttpOnly, SameSite=Lax). Each request checks
  that the fingerprint still matches a configured token, so removing a token from the
  settings signs its sessions out; a sign-in lasts :data:`ADMIN_SESSION_SECONDS`.

A browser without that sign-in, an API token and an anonymous caller get 401 / 403 from
these views, whatever else they may own.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from flask import current_app, g, request, session

from stylequeue.web.errors import ApiError
from stylequeue.web.extensions import services
from stylequeue.web.limits import note_failed_authentication

OWNER_KEY = "owner"
CSRF_KEY = "csrf"
CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf_token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
# Endpoints that need no caller at all (probes, static files, the OpenAPI document), and
# /metrics, which checks its own token (STYLEQUEUE_METRICS_TOKEN, not an API token:
# web/metrics.py). (The static files are the pages blueprint's: ``pages.static``, /assets/.)
PUBLIC_ENDPOINTS = frozenset(
    {"health.healthz", "health.readyz", "metrics.metrics", "pages.static", "openapi.openapi_json"}
)
# Endpoints that create jobs: with STYLEQUEUE_ANONYMOUS=off, only for API tokens.
SUBMIT_ENDPOINTS = frozenset({"api.create_job"})
ADMIN_KEY = "admin"  # session: {"name", "fp", "since"} once an operator signed in
ADMIN_SESSION_SECONDS = 12 * 3600
ADMIN_VIEW_FLAG = "stylequeue_admin_only"

log = logging.getLogger(__name__)
View = TypeVar("View", bound=Callable[..., Any])


@dataclass(frozen=True)
class Caller:
    owner: str | None  # None: a browser that has no owner id yet (owns nothing)
    via: Literal["token", "session"]


def _token_owner(token: str) -> str | None:
    return lookup_token(services().settings.api_tokens, token)


def lookup_token(tokens: Mapping[str, str], token: str) -> str | None:
    """Constant-time lookup, so response timing does not leak how much of a token matched."""
    found = None
    for known, owner in tokens.items():
        if hmac.compare_digest(known.encode(), token.encode()):
            found = owner
    return found


def _unauthorized(message: str) -> ApiError:
    return ApiError(401, "unauthorized", message, headers={"WWW-Authenticate": "Bearer"})


def _refused(message: str) -> ApiError:
    """A credential was presented and is wrong: counted against the caller's address
    (``web/limits.py``: too many and the address is refused credentials for a while)."""
    note_failed_authentication()
    return _unauthorized(message)


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
            raise _refused("unknown API token")
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


# ---- operators --------------------------------------------------------------------------


def admin_tokens() -> dict[str, str]:
    """Token -> ``admin:<name>``: ``STYLEQUEUE_ADMIN_TOKENS``, and the metrics token when one
    is set (who may scrape the fleet's figures may see the fleet)."""
    settings = services().settings
    tokens = dict(settings.admin_tokens)
    if settings.metrics_token:
        tokens.setdefault(settings.metrics_token, "admin:metrics")
    return tokens


def _fingerprint(token: str) -> str:
    key = str(current_app.secret_key).encode()
    return hmac.new(key, token.encode(), hashlib.sha256).hexdigest()


def admin_sign_in(token: str) -> str | None:
    """Check an operator's token typed into the sign-in form; on success keep the sign-in
    (not the token) in the session and return the operator's name."""
    name = lookup_token(admin_tokens(), token.strip()) if token.strip() else None
    if name is None:
        log.warning("refused an admin sign-in from %s", request.remote_addr)
        note_failed_authentication()
        return None
    ensure_session_owner()  # the session (and its CSRF token) the pages use
    session[ADMIN_KEY] = {
        "name": name,
        "fp": _fingerprint(token.strip()),
        "since": int(time.time()),
    }
    return name


def admin_sign_out() -> None:
    session.pop(ADMIN_KEY, None)


def session_admin() -> str | None:
    """The operator signed in on this browser session, if the sign-in still holds."""
    data = session.get(ADMIN_KEY)
    if not isinstance(data, dict):
        return None
    since, fingerprint = data.get("since"), data.get("fp")
    if not isinstance(since, int) or not isinstance(fingerprint, str):
        return None
    if not 0 <= time.time() - since <= ADMIN_SESSION_SECONDS:
        return None
    found = None
    for token, name in admin_tokens().items():  # still configured? (else: revoked)
        if hmac.compare_digest(_fingerprint(token).encode(), fingerprint.encode()):
            found = name
    return found


def current_admin() -> str:
    """The operator calling: a bearer admin token, else a signed-in session. 401 for no or
    an unknown credential, 403 for a valid API token (a job owner, not an operator)."""
    header = request.headers.get("Authorization")
    if header is not None:
        scheme, _, token = header.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise _unauthorized("use 'Authorization: Bearer <admin token>'")
        name = lookup_token(admin_tokens(), token)
        if name is not None:
            return name
        if _token_owner(token) is not None:
            raise ApiError(403, "forbidden", "this is an API token, not an admin token")
        raise _refused("unknown admin token")
    name = session_admin()
    if name is None:
        raise _unauthorized(
            "operators only: send 'Authorization: Bearer <admin token>', or sign in at /fleet"
        )
    return name


def admin_only(view: View) -> View:
    """Mark a view as operators' only: :func:`protect` lets no one else reach it."""
    setattr(view, ADMIN_VIEW_FLAG, True)
    return view


def protect() -> None:
    """``before_request``: authenticate (401 for bad tokens) and enforce CSRF on writes."""
    if request.routing_exception is not None or request.endpoint in PUBLIC_ENDPOINTS:
        return  # unknown path / wrong method: let routing answer 404 / 405
    view = current_app.view_functions.get(request.endpoint or "")
    if getattr(view, ADMIN_VIEW_FLAG, False):
        g.stylequeue_admin = current_admin()
        if request.method not in SAFE_METHODS and "Authorization" not in request.headers:
            _check_csrf()
        return
    caller = current_caller()
    if request.method not in SAFE_METHODS and caller.via == "session":
        if request.endpoint in SUBMIT_ENDPOINTS and not services().settings.anonymous:
            raise ApiError(
                401,
                "token_required",
                "this server takes new jobs from API clients only: send "
                "'Authorization: Bearer <token>'",
                headers={"WWW-Authenticate": "Bearer"},
            )
        _check_csrf()


def template_context() -> dict[str, object]:
    """For templates: ``{{ csrf_token() }}`` (e.g. in a <meta> tag) and the owner id."""
    return {"csrf_token": csrf_token, "owner_id": ensure_session_owner}
