"""Helpers every view uses instead of its own copy: the caller's job or 404, and paging.

``get_job_or_404`` raises :class:`JobNotFound`: the API answers it as JSON (``ApiError``),
the pages blueprint renders its HTML "No such job here" page for it. Paging arguments are
checked by one parser against the bounds in :mod:`stylequeue.shared.jobs`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flask import request, url_for

from stylequeue.shared.jobs import DEFAULT_PER_PAGE, MAX_PAGE, MAX_PER_PAGE, JobsPage, get_owned_job
from stylequeue.shared.models import Job
from stylequeue.shared.text import parse_int
from stylequeue.web.auth import current_owner
from stylequeue.web.errors import ApiError
from stylequeue.web.extensions import services


class JobNotFound(ApiError):
    """No such job for this caller (unknown, malformed or someone else's id: all alike)."""

    def __init__(self) -> None:
        super().__init__(404, "job_not_found", "no such job")


def get_job_or_404(job_id: str) -> Job:
    """The caller's job, loaded in a session of its own (closed on return), or JobNotFound."""
    with services().db() as session:
        job = get_owned_job(session, job_id, current_owner())
    if job is None:
        raise JobNotFound()
    return job


# ---- paging -------------------------------------------------------------------------------


@dataclass(frozen=True)
class PageParams:
    page: int
    per_page: int


_BOUNDS = {"page": (1, 1, MAX_PAGE), "per_page": (DEFAULT_PER_PAGE, 1, MAX_PER_PAGE)}


def _int_arg(name: str, *, lenient: bool) -> int:
    default, low, high = _BOUNDS[name]
    raw = request.args.get(name, "")
    if raw == "":
        return default
    try:
        value: int | None = parse_int(raw)  # ASCII digits only (shared/text.py)
    except ValueError:
        value = None
    if value is not None and low <= value <= high:
        return value
    if lenient:
        return default
    raise ApiError(
        400, "invalid_parameter", f"{name} must be an integer from {low} to {high}", field=name
    )


def page_params(*, lenient: bool = False) -> PageParams:
    """``page`` (from 1) and ``per_page`` from the query string; absent means the default.

    A bad value is a 400 naming the field; ``lenient`` (the HTML list, whose URL a person
    may edit) uses the default instead.
    """
    return PageParams(
        page=_int_arg("page", lenient=lenient), per_page=_int_arg("per_page", lenient=lenient)
    )


def paginate(result: JobsPage, endpoint: str, **values: Any) -> dict[str, Any]:
    """The paging part of a list answer: ``page, per_page, total, next, prev`` (URLs of
    ``endpoint`` with the same ``per_page``, or None)."""

    def link(page: int) -> str:
        return url_for(endpoint, page=page, per_page=result.per_page, **values)

    return {
        "page": result.page,
        "per_page": result.per_page,
        "total": result.total,
        "next": link(result.page + 1) if result.has_next else None,
        "prev": link(result.page - 1) if result.has_prev else None,
    }
