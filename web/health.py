"""Probes: ``/healthz`` (the process answers) and ``/readyz`` (it can do its work).

Readiness checks each dependency a request needs (database, Redis, object storage) and
says which failed, so an orchestrator holds traffic back. Why it failed (the error, which
names internal addresses and buckets) is logged, and shown only to a caller with an admin
or the metrics token (``Authorization: Bearer``); anyone else reads ``"error"``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from flask import Blueprint, Response, jsonify, request
from sqlalchemy import text

from stylequeue.web.extensions import Services, services

log = logging.getLogger(__name__)

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz() -> Response:
    return jsonify({"status": "ok"})


def _check_database(svc: Services) -> None:
    with svc.db() as session:
        session.execute(text("SELECT 1"))


def _check_redis(svc: Services) -> None:
    svc.redis.ping()


def _check_storage(svc: Services) -> None:
    svc.storage.check()


CHECKS: dict[str, Callable[[Services], None]] = {
    "database": _check_database,
    "redis": _check_redis,
    "storage": _check_storage,
}


def _operator() -> bool:
    """Does the caller send an admin (or the metrics) token? Never raises: a wrong token
    just reads the public answer."""
    from stylequeue.web.auth import admin_tokens, lookup_token

    scheme, _, token = (request.headers.get("Authorization") or "").strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return False
    return lookup_token(admin_tokens(), token.strip()) is not None


@bp.get("/readyz")
def readyz() -> tuple[Response, int]:
    svc = services()
    detailed = _operator()
    checks: dict[str, str] = {}
    for name, check in CHECKS.items():
        try:
            check(svc)
            checks[name] = "ok"
        except Exception as exc:
            log.warning("readiness: %s failed: %s", name, exc)
            checks[name] = f"error: {type(exc).__name__}: {exc}"[:300] if detailed else "error"
    failed = [name for name, state in checks.items() if state != "ok"]
    if not failed:
        return jsonify({"status": "ok", "checks": checks}), 200
    body = {
        "status": "unavailable",
        "checks": checks,
        "error": {"code": "not_ready", "message": f"not ready: {', '.join(failed)} failed"},
    }
    return jsonify(body), 503
