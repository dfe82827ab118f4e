"""Operator commands: ``stylequeue migrate`` and ``stylequeue sweep``."""

from __future__ import annotations

import click


@click.command()
@click.option("--revision", default="head", show_default=True, help="Alembic revision to reach.")
def migrate(revision: str) -> None:
    """Create or upgrade the database schema (Alembic)."""
    from shared.migrate import upgrade
    from shared.settings import get_settings

    url = get_settings().database_url
    upgrade(url, revision)
    click.echo(f"database at {revision}: {_safe(url)}")


@click.command()
def sweep() -> None:
    """Re-enqueue jobs left queued (broker was down) or orphaned by a dead worker, once."""
    from shared.sweeper import sweep as run_sweep

    from shared.celery_app import create_celery
    from shared.settings import get_settings

    settings = get_settings()
    report = run_sweep(settings, create_celery(settings))
    click.echo(f"re-enqueued {report.requeued} queued, recovered {report.recovered} orphaned")


def _safe(url: str) -> str:
    """The URL without its password, for logs."""
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)
