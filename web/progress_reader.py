"""Reading a job's loss entries: from the Redis stream, or from its saved history.

The stream is the live source while a job runs. It expires some days after the job ends
(or vanishes when Redis is flushed or down); the worker also saves the whole history to
object storage with the same entry ids, so ``after=<id>`` keeps working across the switch.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from typing import Any

import redis

from stylequeue.shared.models import Job
from stylequeue.shared.progress import FIELDS, STREAM_ID_RE
from stylequeue.shared.storage import ObjectNotFound
from stylequeue.shared.text import parse_int
from stylequeue.web.errors import ApiError
from stylequeue.web.extensions import Services
from stylequeue.web.job_json import finite

log = logging.getLogger(__name__)

MAX_ENTRIES = 1000  # per response; the client asks again with the returned last_id
_STREAM_ID = re.compile(STREAM_ID_RE, re.ASCII)  # \d: 0-9 only, as Redis reads ids
# What ?after= may be: every id this server hands out (a millisecond time has 13 digits) and
# nothing Redis refuses (each half is an unsigned 64-bit integer: 19 digits always fit).
# The OpenAPI document states this pattern, so the two cannot disagree.
AFTER_RE = r"^\d{1,19}-\d{1,19}$"
_AFTER = re.compile(AFTER_RE, re.ASCII)


@dataclass(frozen=True)
class ProgressPage:
    entries: list[dict[str, Any]]
    last_id: str | None
    source: str  # "stream" | "history"
    more: bool  # True when the page is full: ask again at once with after=last_id


def parse_after(raw: str | None) -> str | None:
    """``after`` must be a stream id (``<ms>-<seq>``); empty or absent means from the start."""
    if raw is None or raw == "":
        return None
    if not _AFTER.fullmatch(raw):
        # fullmatch: "$" would let "1-0\n" through, and Redis refuses it (a 503, not a 400)
        raise ApiError(
            400,
            "invalid_parameter",
            "after must be a progress entry id such as 1732456789012-0 "
            "(the last_id of the previous answer)",
            field="after",
        )
    return raw


def parse_limit(raw: str | None) -> int:
    if raw is None or raw == "":
        return MAX_ENTRIES
    try:
        limit = parse_int(raw)  # ASCII digits only ("²" passes str.isdigit, then int fails)
    except ValueError:
        limit = 0
    if not 1 <= limit <= MAX_ENTRIES:
        raise ApiError(
            400, "invalid_parameter", f"limit must be from 1 to {MAX_ENTRIES}", field="limit"
        )
    return limit


def _id_key(stream_id: str) -> tuple[int, int]:
    ms, _, seq = stream_id.partition("-")
    return int(ms), int(seq)


def _clean_entry(entry: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"id": str(entry["id"])}
    for name in FIELDS:
        value = entry.get(name)
        out[name] = int(value) if name == "iteration" and value is not None else finite(value)
    return out


def _from_history(svc: Services, job: Job, after: str | None, limit: int) -> ProgressPage | None:
    """Entries after ``after`` from the saved history, or None when there is none (yet)."""
    if not job.history_key:
        return None
    try:
        doc = json.loads(svc.storage.get(job.history_key))
    except ObjectNotFound:
        return None
    except Exception:
        log.exception("reading the history of job %s failed", job.id)
        raise ApiError(503, "storage_unavailable", "the job's history cannot be read now") from None
    entries = [e for e in doc.get("entries", []) if _STREAM_ID.match(str(e.get("id", "")))]
    if after is not None:
        start = _id_key(after)
        entries = [e for e in entries if _id_key(str(e["id"])) > start]
    page = [_clean_entry(e) for e in entries[:limit]]
    last = page[-1]["id"] if page else after
    return ProgressPage(page, last, "history", more=len(entries) > limit)


def read_progress(svc: Services, job: Job, after: str | None, limit: int) -> ProgressPage:
    try:
        entries, last_id = svc.progress.read(job.id, after, count=limit)
        if entries or svc.progress.exists(job.id):
            page = [_clean_entry(e) for e in entries]
            return ProgressPage(page, last_id, "stream", more=len(page) >= limit)
    except redis.RedisError as exc:
        log.warning("progress stream of job %s unreadable (%s); trying its history", job.id, exc)
        history = _from_history(svc, job, after, limit)
        if history is None:
            raise ApiError(
                503,
                "progress_unavailable",
                "live progress is unavailable right now (Redis cannot be reached); "
                "try again shortly",
            ) from None
        return history
    # No stream (not started yet, expired, or Redis was flushed): the saved history if any.
    history = _from_history(svc, job, after, limit)
    return history or ProgressPage([], after, "stream", more=False)
