"""The headers every answer carries, set in one ``after_request``.

- **Pages** (HTML): a Content-Security-Policy that allows only this origin's own scripts,
  styles, images and requests: no inline script (the one inline ``<script>`` is the import
  map, allowed by its hash, not by ``'unsafe-inline'``; the pages' JSON config blocks are
  data, never run), no inline style, no plugin, no ``<base>``; ``frame-ancestors 'none'``
  (and ``X-Frame-Options: DENY`` for older browsers), so no other page can frame ``/jobs``
  and trick a click on Cancel.
- **Everything else** (JSON, images, the stored inputs served as sent): a policy that
  allows nothing at all, so a file opened directly can run nothing.
- **Private JSON** (a job, the list, progress, the session with its CSRF token, ...):
  ``Cache-Control: private, no-store`` unless the view chose its own caching; every answer
  to a request with an ``Authorization`` header varies on it (Flask adds ``Vary: Cookie``
  where the session was read), so no cache hands one caller's answer to another.
- Beside them: ``nosniff``, a same-origin referrer, cross-origin isolation of windows and
  resources, no powerful browser features, and HSTS on HTTPS requests.
"""

from __future__ import annotations

import base64
import hashlib

from flask import Flask, Response, request

from stylequeue.web.static_assets import import_map_json

_PAGE_POLICY = (
    "default-src 'none'",
    "script-src 'self' {import_map}",
    "style-src 'self'",
    "img-src 'self' data: blob:",  # the favicon is a data: URL; the form previews blobs
    "connect-src 'self'",
    "form-action 'self'",
    "frame-ancestors 'none'",
    "base-uri 'none'",
    "object-src 'none'",
)
NOTHING_POLICY = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
COMMON = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=(), usb=()",
}
HSTS = "max-age=31536000"
PRIVATE_JSON = "private, no-store"


def script_hash(text: str) -> str:
    """A CSP hash source for an inline script whose content is exactly ``text``."""
    digest = hashlib.sha256(text.encode()).digest()
    return f"'sha256-{base64.b64encode(digest).decode()}'"


def page_policy() -> str:
    return "; ".join(_PAGE_POLICY).format(import_map=script_hash(str(import_map_json())))


def set_security_headers(response: Response) -> Response:
    for name, value in COMMON.items():
        response.headers.setdefault(name, value)
    if "Content-Security-Policy" not in response.headers:
        html = response.mimetype == "text/html"
        response.headers["Content-Security-Policy"] = page_policy() if html else NOTHING_POLICY
    if request.is_secure:
        response.headers.setdefault("Strict-Transport-Security", HSTS)
    if response.is_json and "Cache-Control" not in response.headers:
        response.headers["Cache-Control"] = PRIVATE_JSON
    if "Authorization" in request.headers:
        response.vary.add("Authorization")
    return response


def init_app(app: Flask) -> None:
    app.after_request(set_security_headers)
