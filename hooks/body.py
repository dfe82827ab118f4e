"""A webhook's body: the job JSON, as the API serves it, plus the event's name.

Rendered from the job's row as it was at the event (kept with the message), by the web's
own ``job_json`` (links and all), in a small Flask app that has the API's routes for
``url_for`` and the services for the job's delivery log, and nothing else (no pages, no
sessions). Links are the API's paths, as in the API's own answers.
"""

from __future__ import annotations

import json
import threading

from flask import Flask

from stylequeue.shared.models import WebhookMessage
from stylequeue.shared.settings import Settings
from stylequeue.shared.webhook_outbox import job_from_snapshot
from stylequeue.web import api
from stylequeue.web.extensions import init_services
from stylequeue.web.job_json import job_json

_lock = threading.Lock()
_apps: dict[tuple[str, str, str], Flask] = {}


def json_app(settings: Settings) -> Flask:
    """The process's app for ``settings`` (built on first use)."""
    key = (settings.database_url, settings.redis_url, settings.storage_url)
    with _lock:
        app = _apps.get(key)
        if app is None:
            app = Flask("stylequeue.hooks")
            init_services(app, settings)
            app.register_blueprint(api.bp)
            app.json.sort_keys = False  # type: ignore[attr-defined]
            _apps[key] = app
        return app


def render(settings: Settings, message: WebhookMessage) -> str:
    """The body's text: ``{"event": ..., <the job JSON>}``, compact, ASCII only."""
    job = job_from_snapshot(message.job_row)
    with json_app(settings).test_request_context():
        payload = {"event": message.event, **job_json(job)}
    return json.dumps(payload, separators=(",", ":"), allow_nan=False)
