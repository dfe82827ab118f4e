"""Probes: ``/healthz`` (the process answers) and ``/readyz`` (it can do its work).

Readiness checks each dependency a request needs (database, Redis, object storage) and
says which failed, so an orchestrator holds traffic back and a person sees why.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from flask import Blueprint, Response, jsonify
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


@bp.get("/readyz")
def readyz() -> tuple[Response, int]:
    svc = services()
    checks: dict[str, str] = {}
    for name, check in CHECKS.items():
        try:
            check(svc)
            checks[name] = "ok"
        except Exception as exc:
            log.warning("readiness: %s failed: %s", name, exc)
            checks[name] = f"error: {type(exc).__name__}: {exc}"[:300]
    failed = [name for name, state in checks.items() if state != "ok"]
    if not failed:
        return jsonify({"status": "ok", "checks": checks}), 200
    body = {
        "status": "unavailable",
        "checks": checks,
        "error": {"code": "not_ready", "message": f"not ready: {', '.join(failed)} failed"},
    }
    return jsonify(body), 503
