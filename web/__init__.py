"""The web role: Flask app factory, JSON API and HTML pages. Never imports TensorFlow.

``gunicorn "stylequeue.web:create_app()"`` builds the app from the environment
(:func:`stylequeue.shared.settings.get_settings`); tests pass their own settings and, when they need
to, a Celery app. Importing this package has no side effects.
"""

from __future__ import annotations

import logging
import secrets
from datetime import timedelta

from celery import Celery
from flask import Flask, Response

from stylequeue.shared.settings import Settings, get_settings

log = logging.getLogger(__name__)

SESSION_LIFETIME = timedelta(days=365)  # the browser's owner id: keep jobs findable


def create_app(settings: Settings | None = None, *, celery: Celery | None = None) -> Flask:
    """Build the app. ``celery`` replaces the one made from settings (tests, embedding)."""
    from stylequeue.web import api, auth, errors, health, metrics, openapi, pages
    from stylequeue.web.extensions import init_services

    settings = settings or get_settings()
    app = Flask(__name__)
    _configure(app, settings)
    init_services(app, settings, celery)
    errors.register_error_handlers(app)
    app.before_request(auth.protect)
    app.after_request(_security_headers)
    app.context_processor(auth.template_context)
    app.register_blueprint(health.bp)
    app.register_blueprint(metrics.bp)
    app.register_blueprint(api.bp)
    app.register_blueprint(openapi.bp)  # GET /api/v1/openapi.json: the API's contract
    app.register_blueprint(pages.bp)
    return app


def _configure(app: Flask, settings: Settings) -> None:
    secret = settings.secret_key
    if not secret:
        secret = secrets.token_hex(32)
        log.warning(
            "STYLEQUEUE_SECRET_KEY is not set: using a random key, so browser sessions "
            "(and the jobs they own) will not survive a restart or span several web processes"
        )
    app.config.update(
        SECRET_KEY=secret,
        MAX_CONTENT_LENGTH=settings.limits.max_upload_bytes,
        SESSION_COOKIE_NAME="stylequeue_session",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SECURE=settings.cookie_secure,
        SESSION_COOKIE_SAMESITE="Lax",
        PERMANENT_SESSION_LIFETIME=SESSION_LIFETIME,
        SESSION_REFRESH_EACH_REQUEST=False,
        STYLEQUEUE_SETTINGS=settings,
    )
    # app.json is typed as the JSONProvider base; sort_keys is DefaultJSONProvider's (ours)
    app.json.sort_keys = False  # type: ignore[attr-defined]


def _security_headers(response: Response) -> Response:
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    return response
