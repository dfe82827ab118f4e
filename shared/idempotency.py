"""Idempotent submits: one job per owner and ``Idempotency-Key`` for :data:`KEY_TTL`.

A client that retries a submit (its connection broke after the server took the job, say)
sends the same key again and gets the job the first request made, not a second one. The
rule has three parts, each in one place:

- **the guarantee** is the database's: a unique index on ``(owner, idempotency_key)``
  (``shared/models.py``, its migration). Concurrent identical requests each store their
  inputs and try to insert; one row wins, the others' inserts fail with
  :class:`~sqlalchemy.exc.IntegrityError` and they answer the winner's job. No
  check-then-insert, which two requests could both pass;
- **the window**: a key names its job for :data:`KEY_TTL` after the job was made; past it
  :func:`release_expired_key` takes the key off the old row, so the owner may use it again;
- **same request or not** is a fingerprint of the inputs, stored with the key (the web's
  ``web/idempotency.py`` computes it): the same key with other inputs is refused.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from stylequeue.shared.models import Job
from stylequeue.shared.states import utcnow

KEY_TTL = timedelta(hours=24)


def find_keyed_job(
    session: Session, owner: str, key: str, now: datetime | None = None
) -> Job | None:
    """The job ``owner`` made with ``key`` within :data:`KEY_TTL`, or None."""
    cutoff = (now or utcnow()) - KEY_TTL
    return session.scalar(
        select(Job).where(Job.owner == owner, Job.idempotency_key == key, Job.created_at >= cutoff)
    )


def release_expired_key(session: Session, owner: str, key: str, now: datetime | None = None) -> int:
    """Take ``key`` off ``owner``'s job made with it longer than :data:`KEY_TTL` ago (the
    job stays), so a new submit may use it; commits. Returns the rows changed (0 or 1)."""
    cutoff = (now or utcnow()) - KEY_TTL
    result = session.execute(
        update(Job)
        .where(Job.owner == owner, Job.idempotency_key == key, Job.created_at < cutoff)
        .values(idempotency_key=None, request_fingerprint=None)
    )
    session.commit()
    return int(getattr(result, "rowcount", 0) or 0)
