"""Operator commands: ``stylequeue migrate``, ``stylequeue sweep`` and ``stylequeue
webhook-secret``."""

from __future__ import annotations

import click


@click.command()
@click.option("--revision", default="head", show_default=True, help="Alembic revision to reach.")
def migrate(revision: str) -> None:
    """Create or upgrade the database schema (Alembic)."""
    from stylequeue.shared.migrate import upgrade
    from stylequeue.shared.settings import get_settings
    from stylequeue.shared.text import hide_password

    url = get_settings().database_url
    upgrade(url, revision)
    click.echo(f"database at {revision}: {hide_password(url)}")


@click.command()
@click.option(
    "--every",
    type=click.FloatRange(min=1.0),
    default=None,
    help="Keep sweeping every this many seconds (a sweeper process) instead of once.",
)
def sweep(every: float | None) -> None:
    """Re-enqueue jobs left queued (broker was down) or orphaned by a dead worker; remove
    finished jobs past STYLEQUEUE_RETENTION_DAYS and purge deleted jobs' files.

    As a loop (``--every 30``) this is the fleet's sweeper: it runs outside the workers, so
    a sweep never waits in the queue behind a long job. Several may run; a Redis lock makes
    them take turns.
    """
    import time

    from stylequeue.shared.celery_app import create_celery
    from stylequeue.shared.settings import get_settings
    from stylequeue.shared.sweeper import sweep as run_sweep

    settings = get_settings()
    app = create_celery(settings)
    while True:
        report = run_sweep(settings, app)
        removed = report.expired or report.purged or report.purge_pending
        if every is None or report.requeued or report.recovered or report.errors or removed:
            click.echo(
                f"re-enqueued {report.requeued} queued, recovered {report.recovered} orphaned, "
                f"expired {report.expired}, purged {report.purged} "
                f"({report.purge_pending} left to purge)"
                + (f", {len(report.errors)} errors: {report.errors[0]}" if report.errors else "")
            )
        if every is None:
            return
        time.sleep(every)


@click.command("webhook-secret")
def webhook_secret() -> None:
    """Print a new ``whsec_`` signing secret, for ``STYLEQUEUE_WEBHOOK_SECRET``."""
    from stylequeue.shared.webhook_signing import new_secret

    click.echo(new_secret())
