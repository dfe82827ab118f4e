"""``stylequeue delete``: delete jobs on a stylequeue server (``DELETE /api/v1/jobs/<id>``).

A running job is stopped first; the server removes its picture, snapshots, inputs and
progress. Only the job's owner can: with the token the job was submitted with (a job
submitted without one belongs to that command's session and cannot be deleted later).
"""

from __future__ import annotations

import sys
from urllib.parse import quote

import click
import requests

from stylequeue.cli.submit import ApiError, ClientError, call, job_url, make_session
from stylequeue.shared.settings import ClientSettings, load_client_settings


def delete_job(session: requests.Session, base: str, job_id: str) -> None:
    """Delete one job (204); raises ApiError (404: not this caller's, or gone already)."""
    call(session, "DELETE", job_url(base, quote(job_id, safe="")), timeout=(5, 60))


@click.command()
@click.argument("job_ids", nargs=-1, required=True, metavar="JOB_ID [JOB_ID ...]")
@click.option(
    "--server",
    default=lambda: load_client_settings().server,
    show_default=f"$STYLEQUEUE_SERVER, else {ClientSettings.server}",
    help="Base URL of the service.",
)
@click.option(
    "--token",
    default=lambda: load_client_settings().api_token,
    show_default="$STYLEQUEUE_API_TOKEN",
    help="API token: the one the jobs were submitted with.",
)
def delete(job_ids: tuple[str, ...], server: str, token: str | None) -> None:
    """Delete JOB_ID (and its picture, snapshots, inputs and progress) for good; a running
    job is stopped first. Exits 1 if any could not be deleted."""
    if not token:
        raise click.UsageError(
            "no token: give --token or set STYLEQUEUE_API_TOKEN (only the token a job was "
            "submitted with can delete it)"
        )
    session = make_session(token)
    failed = 0
    for job_id in job_ids:
        try:
            delete_job(session, server, job_id)
        except ApiError as exc:
            failed += 1
            reason = "no such job for this token" if exc.status == 404 else exc.format_message()
            click.echo(f"{job_id}: not deleted: {reason}", err=True)
            continue
        except ClientError as exc:  # the server cannot be reached: the rest would fail too
            raise click.ClickException(f"{job_id}: not deleted: {exc.format_message()}") from None
        click.echo(f"deleted {job_id}")
    if failed:
        sys.exit(1)
