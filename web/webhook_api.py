"""``/api/v1/webhook-secret``: the caller's webhook signing secret, and its rotation.

``GET`` answers the caller's ``whsec_`` secret, made on first read (like ``/session``
makes a browser's owner id, it is the one GET that may write: the same answer every time
after). ``POST`` rotates it: the new one is answered, and the old one still signs beside it
for a day (``shared.webhook_secrets``). A browser's POST needs its CSRF token like any
cookie-authenticated write. Where the operator set ``STYLEQUEUE_WEBHOOK_SECRET``, that
secret signs every delivery: it is never shown, ``GET`` says so (``secret`` null) and
``POST`` is a 409.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify

from stylequeue.shared.models import WebhookSecret
from stylequeue.shared.webhook_secrets import owner_secret, previous_in_force, rotate_secret
from stylequeue.web.auth import current_caller, ensure_session_owner
from stylequeue.web.errors import ApiError
from stylequeue.web.extensions import services
from stylequeue.web.job_json import iso

bp = Blueprint("webhooks", __name__, url_prefix="/api/v1")

DEPLOYMENT = {
    "scope": "deployment",
    "secret": None,
    "created_at": None,
    "previous_expires_at": None,
    "note": "this server signs every webhook with its operator's secret",
}


def _owner() -> str:
    caller = current_caller()
    owner = caller.owner if caller.via == "token" else ensure_session_owner()
    assert owner is not None
    return owner


def secret_json(row: WebhookSecret) -> dict[str, Any]:
    previous = previous_in_force(row)
    return {
        "scope": "owner",
        "secret": row.secret,
        "created_at": iso(row.created_at),
        # the rotated-out secret signs too until then (null: none does)
        "previous_expires_at": iso(row.previous_until) if previous else None,
    }


@bp.get("/webhook-secret")
def get_webhook_secret() -> tuple[Response, int, dict[str, str]]:
    svc = services()
    if svc.settings.webhooks.secret:
        return jsonify(DEPLOYMENT), 200, {"Cache-Control": "no-store"}
    owner = _owner()
    with svc.db() as session:
        body = secret_json(owner_secret(session, owner))
    return jsonify(body), 200, {"Cache-Control": "no-store"}


@bp.post("/webhook-secret")
def rotate_webhook_secret() -> tuple[Response, int, dict[str, str]]:
    svc = services()
    if svc.settings.webhooks.secret:
        raise ApiError(
            409,
            "deployment_secret",
            "this server signs every webhook with its operator's secret "
            "(STYLEQUEUE_WEBHOOK_SECRET); the operator rotates it",
        )
    owner = _owner()
    with svc.db() as session:
        body = secret_json(rotate_secret(session, owner))
    return jsonify(body), 200, {"Cache-Control": "no-store"}
