"""The web role: Flask app factory, JSON API and HTML pages. Never imports TensorFlow.

``gunicorn "stylequeue.web:create_app()"`` builds the app from the environment
(:func:`stylequeue.shared.settings.get_settings`); tests pass their own settings and, when they need
to, a Celery app. Importing this package has no side effects.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from celery import Celery
from flask import Flask

from stylequeue.shared.settings import Settings, get_settings

log = logging.getLogger(__name__)

SESSION_LIFETIME = timedelta(days=365)  # the browser's owner id: keep jobs findable
MAX_FORM_PARTS = 200  # fields and files in one form (web/errors.py says so past it)


def create_app(settings: Settings | None = None, *, celery: Celery | None = None) -> Flask:
    """Build the app. ``celery`` replaces the one made from settings (tests, embedding)."""
    from stylequeue.web import (
        api,
        auth,
        errors,
        health,
        limits,
        metrics,
        openapi,
        pages,
        security_headers,
        webhook_api,
    )  # fmt: skip
    from stylequeue.web.extensions import init_services

    settings = settings or get_settings()
    # No app-wide static folder: the pages blueprint serves web/static under /assets/ (one
    # path per file, hashed URLs).
    app = Flask(__name__, static_folder=None)
    _configure(app, settings)
    svc = init_services(app, settings, celery)
    errors.register_error_handlers(app)
    limits.init_app(app, settings, svc.redis.connection_pool)  # first: before authentication
    app.before_request(auth.protect)
    security_headers.init_app(app)
    app.context_processor(auth.template_context)
    app.register_blueprint(health.bp)
    app.register_blueprint(metrics.bp)
    app.register_blueprint(api.bp)
    app.register_blueprint(webhook_api.bp)
    app.register_blueprint(openapi.bp)  # GET /api/v1/openapi.json: the API's contract
    app.register_blueprint(pages.bp)
    return app


def _configure(app: Flask, settings: Settings) -> None:
    from stylequeue.web.secret_key import shared_secret_key

    # Without a configured key, one kept in the var dir: the same for every process.
    secret = settings.secret_key or shared_secret_key(settings.var_dir)
    app.config.update(
        SECRET_KEY=secret,
        MAX_CONTENT_LENGTH=settings.limits.max_upload_bytes,
        # a submit has a few dozen parts at most; werkzeug's default (1000) is far above
        MAX_FORM_PARTS=MAX_FORM_PARTS,
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
