"""Who is asking, and how often: the client address, and the rate limits per address.

- **The client address** is ``request.remote_addr``. Behind reverse proxies, werkzeug's
  ``ProxyFix`` takes it (and the scheme and host) from the ``X-Forwarded-*`` headers the
  last ``STYLEQUEUE_TRUSTED_PROXIES`` hops added, and from nothing else: with the default
  0 no header is believed, since anyone can send one. Jobs keep a keyed hash of it
  (:func:`client_key`), never the address, to count an address's active jobs
  (``shared.quota``).
- **Rate limits**, Flask-Limiter on the app's own Redis (its connection pool; the keys under
  ``shared.redis_keys.RATE_LIMIT_PREFIX``), a moving window per client address:

  * submissions (``POST /api/v1/jobs``): ``STYLEQUEUE_SUBMIT_RATE_LIMIT``;
  * refused credentials (an unknown bearer token, a wrong operator sign-in, a wrong
    metrics token; :func:`note_failed_authentication`): ``STYLEQUEUE_AUTH_FAILURE_RATE_LIMIT``.
    Each refusal counts; once over the limit, every request from that address that
    presents a credential is answered 429 until the window frees, so guessing tokens
    stays slow, while the same address's anonymous pages keep working.

  A refused request gets 429 with ``Retry-After`` (seconds) and the JSON error shape. The
  check runs before authentication (this ``before_request`` is registered first), so a
  limited client costs one Redis round trip. Redis unreachable: the limiter counts in the
  process's memory until it is back (logged), never no limit at all.
"""

from __future__ import annotations

import hashlib
import hmac

from flask import Flask, Response, current_app, g, request
from flask_limiter import ApplicationLimit, Limiter, RateLimitExceeded
from werkzeug.exceptions import HTTPException
from werkzeug.middleware.proxy_fix import ProxyFix

from stylequeue.shared.redis_keys import RATE_LIMIT_PREFIX
from stylequeue.shared.settings import Settings
from stylequeue.web.errors import error_response, wants_json

SUBMIT_ENDPOINTS = frozenset({"api.create_job"})
# Where a credential is typed into a form rather than sent as a header.
SIGN_IN_ENDPOINTS = frozenset({"pages.fleet_sign_in"})
_FAILED_FLAG = "stylequeue_auth_failed"
EXTENSION_KEY = "stylequeue_limiter"


def client_address() -> str:
    """The caller's address (after :class:`ProxyFix`, when proxies are trusted)."""
    return request.remote_addr or "unknown"


def client_key() -> str:
    """The client address as a job row keeps it: an HMAC under the app's secret key, so the
    database holds no addresses, yet an address's jobs can be counted."""
    key = str(current_app.secret_key).encode()
    message = b"stylequeue/client-address/" + client_address().encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()[:32]


def note_failed_authentication() -> None:
    """Count this request against the address's refused credentials (web/auth.py and
    web/metrics.py call it where they refuse one)."""
    setattr(g, _FAILED_FLAG, True)


def _presents_credential() -> bool:
    if "Authorization" in request.headers:
        return True
    return request.endpoint in SIGN_IN_ENDPOINTS and request.method == "POST"


def _not_a_submit() -> bool:
    return request.endpoint not in SUBMIT_ENDPOINTS or request.method != "POST"


def _authentication_failed(_response: Response) -> bool:
    return bool(g.get(_FAILED_FLAG))


def _limits(settings: Settings) -> list[ApplicationLimit]:
    limits = []
    if settings.submit_rate_limit:
        limits.append(
            ApplicationLimit(
                settings.submit_rate_limit,
                scope="submit",
                exempt_when=_not_a_submit,
                error_message=(
                    f"too many submissions from your address (at most "
                    f"{settings.submit_rate_limit.replace(';', ', ')}); try again later"
                ),
            )
        )
    if settings.auth_failure_rate_limit:
        limits.append(
            ApplicationLimit(
                settings.auth_failure_rate_limit,
                scope="auth-failures",
                exempt_when=lambda: not _presents_credential(),
                deduct_when=_authentication_failed,
                error_message=("too many refused credentials from your address; try again later"),
            )
        )
    return limits


def rate_limited(exc: RateLimitExceeded) -> Response | HTTPException:
    """429 in the API's error shape (Flask-Limiter adds ``Retry-After`` afterwards)."""
    if not wants_json():
        return exc
    return error_response(429, "rate_limited", exc.description or "too many requests")


def init_app(app: Flask, settings: Settings, pool: object) -> Limiter:
    """Trust the configured proxies and start the limiter on the Redis behind ``pool``.
    Call before any other ``before_request`` is registered, so limits are checked first."""
    if settings.trusted_proxies:
        hops = settings.trusted_proxies
        app.wsgi_app = ProxyFix(  # type: ignore[method-assign]
            app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops
        )
    limiter = Limiter(
        client_address,
        app=app,
        application_limits=list(_limits(settings)),
        storage_uri=settings.redis_url,
        storage_options={"connection_pool": pool, "key_prefix": RATE_LIMIT_PREFIX},  # type: ignore[dict-item]
        strategy="moving-window",
        headers_enabled=True,
        swallow_errors=True,
        in_memory_fallback_enabled=True,
    )
    app.register_error_handler(RateLimitExceeded, rate_limited)
    app.extensions[EXTENSION_KEY] = limiter
    return limiter
