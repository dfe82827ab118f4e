"""``GET /metrics``: the fleet's numbers in Prometheus's text format, for an autoscaler and
an operator (``docs/fleet.md``).

Who may scrape: with ``STYLEQUEUE_METRICS_TOKEN`` set, only a caller sending it as
``Authorization: Bearer <token>`` (401 without the header, 403 with another token); without
it, only loopback callers (403 otherwise). The address is ``request.remote_addr`` as the
WSGI server sees it, or the proxies' ``X-Forwarded-For`` when ``STYLEQUEUE_TRUSTED_PROXIES``
is set (``web/limits.py``); behind a proxy that is not counted there every caller looks
local, so set a token there. A wrong token counts as a refused credential (rate-limited).

The figures are computed at scrape time (:mod:`stylequeue.web.metrics_collector`) on a
private registry, never prometheus_client's global one.
"""

from __future__ import annotations

import hmac
import ipaddress

from flask import Blueprint, Response, request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from stylequeue.shared.broker import broker_layout
from stylequeue.web.errors import ApiError
from stylequeue.web.extensions import services
from stylequeue.web.limits import note_failed_authentication
from stylequeue.web.metrics_collector import FleetCollector

bp = Blueprint("metrics", __name__)


def is_loopback(address: str | None) -> bool:
    """True for 127.0.0.0/8, ::1 and IPv4-mapped loopback; False for anything else."""
    if not address:
        return False
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped.is_loopback
    return ip.is_loopback


def check_scraper() -> None:
    """Raise the 401/403 :class:`ApiError` unless this caller may read the metrics."""
    expected = services().settings.metrics_token
    if expected is None:
        if not is_loopback(request.remote_addr):
            raise ApiError(
                403,
                "forbidden",
                "metrics are served to loopback callers only; set STYLEQUEUE_METRICS_TOKEN "
                "to scrape from elsewhere",
            )
        return
    scheme, _, token = (request.headers.get("Authorization") or "").strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise ApiError(
            401,
            "unauthorized",
            "send the metrics token as 'Authorization: Bearer <token>'",
            headers={"WWW-Authenticate": "Bearer"},
        )
    if not hmac.compare_digest(token.encode(), expected.encode()):
        note_failed_authentication()
        raise ApiError(403, "forbidden", "wrong metrics token")


@bp.get("/metrics")
def metrics() -> Response:
    check_scraper()
    svc = services()
    registry = CollectorRegistry(auto_describe=False)
    registry.register(FleetCollector(svc.sessionmaker, svc.redis, broker_layout(svc.celery)))
    response = Response(generate_latest(registry), status=200)
    response.headers["Content-Type"] = CONTENT_TYPE_LATEST
    response.headers["Cache-Control"] = "no-store"
    return response
