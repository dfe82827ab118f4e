"""Static files under content-hashed URLs (cache busting).

The pages blueprint serves ``web/static`` under ``/assets/``; :func:`asset` adds the file's
content hash (``?v=...``), so browsers may keep it for a year and never run a stale script
after an upgrade. An import map sends the shared ES modules to their hashed URLs too.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path

from flask import url_for
from jinja2.utils import htmlsafe_json_dumps
from markupsafe import Markup

STATIC_DIR = Path(__file__).parent / "static"
ONE_YEAR = 365 * 24 * 3600

# Modules that other modules import: an import map sends "./common.js" to its hashed URL,
# so repeat visits cost no request at all (not even a 304).
SHARED_MODULES = ("js/common.js", "js/chart.js")


@lru_cache(maxsize=256)
def _file_hash(path: str, mtime: float) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:10]


def asset(filename: str) -> str:
    """URL of a static file with its content hash (cache busting)."""
    path = STATIC_DIR / filename
    try:
        version: str | None = _file_hash(str(path), path.stat().st_mtime)
    except OSError:
        version = None
    return url_for("pages.static", filename=filename, v=version)


def import_map() -> dict[str, dict[str, str]]:
    return {"imports": {url_for("pages.static", filename=m): asset(m) for m in SHARED_MODULES}}


def import_map_json() -> Markup:
    """The import map exactly as the pages inline it: the Content-Security-Policy allows that
    one inline script by the hash of this text (``web/security_headers.py``)."""
    return htmlsafe_json_dumps(import_map())
