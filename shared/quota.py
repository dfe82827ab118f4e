"""What one owner, one client address and all anonymous callers together may hold, and the
one transaction that checks it and inserts a job.

The caps (:class:`Caps`, from settings):

- **active jobs per owner** (``STYLEQUEUE_MAX_ACTIVE_JOBS``): queued + running;
- **active jobs of all anonymous owners together** (browser sessions, owner ``web:...``,
  ``STYLEQUEUE_ANONYMOUS_MAX_ACTIVE_JOBS``): a new anonymous owner costs one GET, so the
  per-owner cap alone bounds nothing;
- **active jobs of the anonymous owners of one client address**
  (``STYLEQUEUE_MAX_ACTIVE_JOBS_PER_ADDRESS``; the row keeps a keyed hash of the address);
- **stored bytes per owner** (``STYLEQUEUE_STORAGE_QUOTA_BYTES``): the inputs of every job
  of theirs still in the database (finished ones too; a deleted job frees its share).

:func:`insert_within_caps` counts and inserts in one transaction, serialised against every
other insert that could take the same room, so concurrent submits cannot both see room for
the last slot: on PostgreSQL by a transaction-scoped advisory lock (one per owner for API
owners; one for all anonymous owners, since their global cap is shared), under READ
COMMITTED each count then sees what the previous holder committed; on SQLite by the
database's write lock, which ``shared.db`` takes (``BEGIN IMMEDIATE``) at the first locking
read. :func:`check_caps` is the same check without the lock: an early answer before the
uploads are read.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from stylequeue.shared.models import Job
from stylequeue.shared.states import ACTIVE_VALUES

ANONYMOUS_PREFIX = "web:"  # the owner ids of browser sessions (web/auth.py)


@dataclass(frozen=True)
class Caps:
    max_active: int  # per owner
    anonymous_max_active: int  # all anonymous owners together
    address_max_active: int  # the anonymous owners of one client address
    quota_bytes: int  # stored input bytes per owner; 0: no quota


class CapReached(Exception):
    """A cap would be passed; nothing was inserted. ``kind`` says which:
    ``owner_active``, ``anonymous_active``, ``address_active`` or ``storage``."""

    def __init__(self, kind: str, used: int, limit: int) -> None:
        super().__init__(f"{kind}: {used} used, limit {limit}")
        self.kind = kind
        self.used = used
        self.limit = limit


def is_anonymous(owner: str) -> bool:
    return owner.startswith(ANONYMOUS_PREFIX)


def _active() -> Select[int]:
    return select(func.count()).select_from(Job).where(Job.status.in_(ACTIVE_VALUES))


def _stored_bytes(owner: str) -> Select[int]:
    return select(func.coalesce(func.sum(Job.input_bytes), 0)).where(Job.owner == owner)


def _counts(
    session: Session, owner: str, client_key: str | None, *, lock_first: bool
) -> dict[str, int]:
    """What the caps count, read in ``session``'s transaction; ``lock_first`` reads the first
    count ``FOR UPDATE`` (on SQLite that takes the write lock; PostgreSQL takes its advisory
    lock before, and refuses FOR UPDATE with an aggregate)."""
    owner_query = _active().where(Job.owner == owner)
    if lock_first and session.get_bind().dialect.name != "postgresql":
        owner_query = owner_query.with_for_update()
    counts = {
        "owner_active": session.scalar(owner_query) or 0,
        "storage": int(session.scalar(_stored_bytes(owner)) or 0),
    }
    if is_anonymous(owner):
        anonymous = _active().where(Job.owner.startswith(ANONYMOUS_PREFIX, autoescape=True))
        counts["anonymous_active"] = session.scalar(anonymous) or 0
        if client_key is not None:
            address = _active().where(Job.client_key == client_key)
            counts["address_active"] = session.scalar(address) or 0
    return counts


def _refuse(counts: dict[str, int], caps: Caps, incoming_bytes: int) -> None:
    """Raise :class:`CapReached` for the first cap that one more job would pass."""
    limits = {
        "owner_active": caps.max_active,
        "anonymous_active": caps.anonymous_max_active,
        "address_active": caps.address_max_active,
    }
    for kind, limit in limits.items():
        if kind in counts and counts[kind] >= limit:
            raise CapReached(kind, counts[kind], limit)
    stored = counts["storage"]
    if caps.quota_bytes and stored + incoming_bytes > caps.quota_bytes:
        raise CapReached("storage", stored, caps.quota_bytes)


def check_caps(
    session: Session, owner: str, client_key: str | None, caps: Caps, incoming_bytes: int = 0
) -> None:
    """Would one more job of ``incoming_bytes`` pass a cap now? An early answer only (no
    lock): :func:`insert_within_caps` decides."""
    _refuse(_counts(session, owner, client_key, lock_first=False), caps, incoming_bytes)


def advisory_lock_key(owner: str) -> int:
    """The PostgreSQL advisory-lock key (signed 64-bit) that serialises the inserts that
    share room with ``owner``'s: the owner's own for an API owner, one for all anonymous
    owners. Namespaced, so no other advisory-lock user collides with it by accident."""
    scope = "anonymous" if is_anonymous(owner) else f"owner/{owner}"
    digest = hashlib.blake2b(f"stylequeue/active-jobs/{scope}".encode(), digest_size=8)
    return int.from_bytes(digest.digest(), "big", signed=True)


def insert_within_caps(session: Session, job: Job, caps: Caps) -> None:
    """Insert ``job`` (an active one; its ``owner``, ``client_key`` and ``input_bytes`` set)
    and commit, unless a cap would be passed: then roll back and raise :class:`CapReached`,
    nothing inserted. ``session`` must have no transaction open yet."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(select(func.pg_advisory_xact_lock(advisory_lock_key(job.owner))))
    counts = _counts(session, job.owner, job.client_key, lock_first=True)
    try:
        _refuse(counts, caps, job.input_bytes)
    except CapReached:
        session.rollback()
        raise
    session.add(job)
    session.commit()
