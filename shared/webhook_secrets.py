"""Who signs a job's webhooks: the deployment's secret, or the job owner's own.

With ``STYLEQUEUE_WEBHOOK_SECRET`` set, every delivery is signed with it (one integrator,
one secret, set by the operator; the API never shows it). Otherwise each owner (an API
token's, or a browser's) has a ``whsec_`` secret of their own, made on first need
(``GET /api/v1/webhook-secret`` or the first delivery) and rotated on request. A rotated-out
secret keeps signing beside the new one for :data:`ROTATION_GRACE`, so a receiver can
switch over without rejecting a delivery.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from stylequeue.shared.models import WebhookSecret
from stylequeue.shared.settings import WebhookSettings
from stylequeue.shared.states import utcnow
from stylequeue.shared.webhook_signing import new_secret

ROTATION_GRACE = timedelta(hours=24)


def owner_secret(session: Session, owner: str) -> WebhookSecret:
    """The owner's secret, made now if they have none. Two callers making it at once get
    the same one (an insert that does nothing on conflict, then a read). Commits."""
    row = session.get(WebhookSecret, owner)
    if row is not None:
        return row
    values = {"owner": owner, "secret": new_secret(), "created_at": utcnow()}
    if session.get_bind().dialect.name == "postgresql":
        stmt = postgresql.insert(WebhookSecret).values(**values)
        session.execute(stmt.on_conflict_do_nothing(index_elements=["owner"]))
    else:
        lite = sqlite.insert(WebhookSecret).values(**values)
        session.execute(lite.on_conflict_do_nothing(index_elements=["owner"]))
    session.commit()
    row = session.get(WebhookSecret, owner, populate_existing=True)
    assert row is not None
    return row


def rotate_secret(session: Session, owner: str) -> WebhookSecret:
    """A new secret for the owner; the old one still signs for :data:`ROTATION_GRACE`.
    Commits."""
    owner_secret(session, owner)
    row = session.get(WebhookSecret, owner, with_for_update=True, populate_existing=True)
    assert row is not None
    now = utcnow()
    row.previous_secret, row.previous_until = row.secret, now + ROTATION_GRACE
    row.secret, row.created_at = new_secret(), now
    session.commit()
    return row


def previous_in_force(row: WebhookSecret, now: datetime | None = None) -> str | None:
    """The rotated-out secret while it still signs, else None."""
    now = now or utcnow()
    if row.previous_secret and row.previous_until is not None and now < row.previous_until:
        return row.previous_secret
    return None


def signing_secrets(session: Session, owner: str, settings: WebhookSettings) -> list[str]:
    """The secrets a delivery for ``owner``'s job is signed with, newest first."""
    if settings.secret:
        return [settings.secret]
    row = owner_secret(session, owner)
    previous = previous_in_force(row)
    return [row.secret] if previous is None else [row.secret, previous]
