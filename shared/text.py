"""Small text rules every part reads alike: yes/no words, numbers, URLs shown without
passwords.

Pure functions, standard library only (the CLI's HTTP client, the web, the worker and the
settings all import them).
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("0", "false", "no", "off")
MASK = "***"
# ASCII only: Python's int() and float() also take other scripts' digits (Arabic-Indic
# "\u0661\u0660" is 10), "²" passes str.isdigit() and then fails int(), and "1_000" is
# Python syntax, not a number.
_INTEGER = re.compile(r"[0-9]+", re.ASCII)
_DECIMAL = re.compile(r"[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?", re.ASCII)


def parse_bool(value: object, field: str, default: bool | None = None) -> bool:
    """``1/true/yes/on`` -> True, ``0/false/no/off`` -> False (any case, spaces ignored).

    A bool is returned as it is. ``None`` or a blank string gives ``default`` when there is
    one. Anything else raises :class:`ValueError` naming ``field`` (a form field, a query
    argument, an environment variable), so the user knows what to fix.
    """
    if isinstance(value, bool):
        return value
    text = "" if value is None else str(value).strip().lower()
    if text in TRUE_WORDS:
        return True
    if text in FALSE_WORDS:
        return False
    if not text and default is not None:
        return default
    raise ValueError(
        f"{field} must be one of {'/'.join(TRUE_WORDS)} or {'/'.join(FALSE_WORDS)}, got {value!r}"
    )


def parse_int(text: str) -> int:
    """A whole number written in ASCII digits (no sign, spaces or underscores), or
    :class:`ValueError`. THE parser of numbers from people: query strings, form fields
    and settings all come through here (callers name the field in their error)."""
    if not _INTEGER.fullmatch(text):
        raise ValueError(f"not a whole number in digits 0-9: {text!r}")
    return int(text)


def parse_decimal(text: str) -> float:
    """A number such as ``-1.5``, ``.02`` or ``1e4`` in ASCII (no ``nan``, ``inf`` or
    underscores), or :class:`ValueError`; see :func:`parse_int`."""
    if not _DECIMAL.fullmatch(text):
        raise ValueError(f"not a number in digits 0-9: {text!r}")
    return float(text)


def hide_password(url: str) -> str:
    """``url`` with its password (if any) replaced by ``***``, for logs and summaries.

    Everything else is kept as written: scheme, user, host (IPv6 brackets, case), port,
    path and query. ``redis://:pw@host/0`` -> ``redis://:***@host/0``;
    ``postgresql+psycopg://u:pw@h/db`` -> ``postgresql+psycopg://u:***@h/db``.
    """
    try:
        parts = urlsplit(url)
    except ValueError:  # e.g. an unbalanced IPv6 bracket: not a URL we can take apart
        return url
    userinfo, at, host = parts.netloc.rpartition("@")
    user, colon, password = userinfo.partition(":")
    if not at or not colon or not password:
        return url
    return urlunsplit(parts._replace(netloc=f"{user}:{MASK}@{host}"))
