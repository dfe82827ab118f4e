"""``stylequeue submit``: send a job to a stylequeue server, follow it, download the result.

A thin client of the v1 JSON API. The functions take a base URL and a ``requests.Session``
(which carries the bearer token, or the session cookie when there is none) so tests can
drive them against a live server without the command line.
"""

from __future__ import annotations

import mimetypes
import os
import re
import sys
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import click
import requests

from stylequeue.cli.options import server_option
from stylequeue.shared.params import OPTIMIZERS
from stylequeue.shared.settings import load_client_settings

API = "/api/v1"
POLL_INTERVAL = 1.0
OUTAGE_GRACE = 60.0  # seconds of failed polls (server restarting) before we give up
TIMEOUT = (5, 60)  # connect, read (an upload may be slow)
CSRF_HEADER = "X-CSRF-Token"
IDEMPOTENCY_HEADER = "Idempotency-Key"
# A submit whose answer was lost (connection dropped, timeout) or that got a 5xx is sent
# again, with the same Idempotency-Key: the server answers the job the first one made.
SUBMIT_ATTEMPTS = 3
SUBMIT_BACKOFF = 1.0  # seconds, times the attempt number


# API field -> the option that sets it, where the names differ, so errors say what to fix.
CLI_FLAGS = {"max_size": "--size", "content": "CONTENT", "style": "STYLE"}


class ClientError(click.ClickException):
    """Something the user should read; exit status 1."""


class ApiError(ClientError):
    """A 4xx/5xx from the server, with its ``{error: {code, message, field?}}`` body."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        self.status, self.code, self.field = status, code, field
        flag = CLI_FLAGS.get(field or "")
        where = f"{field} ({flag}): " if flag else f"{field}: " if field else ""
        super().__init__(f"{where}{message} ({code}, HTTP {status})")

    @classmethod
    def from_response(cls, resp: requests.Response) -> ApiError:
        try:
            err = resp.json()["error"]
            return cls(
                resp.status_code,
                str(err.get("code", "error")),
                str(err.get("message", "")),
                err.get("field"),
            )
        except (ValueError, KeyError, TypeError, AttributeError):
            text = " ".join(resp.text.split())[:200] or resp.reason or ""
            return cls(resp.status_code, "http_error", text)


class Unreachable(ClientError):
    """No HTTP answer at all: wrong URL, server down, network."""


class JobEnded(ClientError):
    """The job failed or was canceled."""


# ---- the API, one function per call ------------------------------------------------------


def make_session(token: str | None = None) -> requests.Session:
    session = requests.Session()
    session.headers["User-Agent"] = "stylequeue-submit"
    session.headers["Accept"] = "application/json"
    if token:
        session.headers["Authorization"] = f"Bearer {token}"
    return session


def call(session: requests.Session, method: str, url: str, **kwargs: Any) -> requests.Response:
    """One request; errors become ApiError / Unreachable with a readable message."""
    kwargs.setdefault("timeout", TIMEOUT)
    try:
        resp = session.request(method, url, **kwargs)
    except (requests.ConnectionError, requests.Timeout) as exc:
        raise Unreachable(f"cannot reach the server at {url}: {_reason(exc)}") from None
    if resp.status_code >= 400:
        raise ApiError.from_response(resp)
    return resp


def job_url(base: str, job: Mapping[str, Any] | str, link: str = "self") -> str:
    """The job's own link when the server gave one (it knows its prefix), else the contract's."""
    if isinstance(job, Mapping):
        href = (job.get("links") or {}).get(link)
        if href:
            return urljoin(base.rstrip("/") + "/", href)
        job = str(job["id"])
    suffix = "" if link == "self" else f"/{link}"
    return f"{base.rstrip('/')}{API}/jobs/{job}{suffix}"


def form_fields(params: Mapping[str, Any]) -> dict[str, str]:
    """Only the parameters the user gave, as form strings; the server checks ranges."""
    out: dict[str, str] = {}
    for key, value in params.items():
        if value is None:
            continue
        out[key] = ("true" if value else "false") if isinstance(value, bool) else str(value)
    return out


def ensure_csrf(session: requests.Session, base: str) -> None:
    """Without a token the server knows us by its session cookie, and cookie-authenticated
    writes need the session's CSRF token: fetch both once from ``GET /api/v1/session``."""
    if "Authorization" in session.headers or CSRF_HEADER in session.headers:
        return
    info = call(session, "GET", f"{base.rstrip('/')}{API}/session").json()
    if info.get("csrf_token"):
        session.headers[CSRF_HEADER] = str(info["csrf_token"])


def create_job(
    session: requests.Session,
    base: str,
    content: Path,
    styles: Sequence[Path],
    params: Mapping[str, Any] | None = None,
    *,
    key: str | None = None,
    attempts: int = SUBMIT_ATTEMPTS,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any]:
    """POST the images and parameters; the job JSON (201, or 200 when a retry finds the job
    an earlier attempt made). With an idempotency ``key``, an attempt whose answer is lost
    or a 5xx is sent again with the same key, up to ``attempts`` in all; without one, never
    (a second job could be made)."""
    ensure_csrf(session, base)
    headers = {IDEMPOTENCY_HEADER: key} if key else {}
    for attempt in range(1, attempts + 1):
        try:
            return _post_job(session, base, content, styles, params or {}, headers)
        except (Unreachable, ApiError) as exc:
            retry = isinstance(exc, Unreachable) or exc.status >= 500
            if not key or not retry or attempt >= attempts:
                raise
            sleep(SUBMIT_BACKOFF * attempt)
    raise AssertionError("unreachable")  # the loop returns or raises


def _post_job(
    session: requests.Session,
    base: str,
    content: Path,
    styles: Sequence[Path],
    params: Mapping[str, Any],
    headers: Mapping[str, str],
) -> dict[str, Any]:
    with ExitStack() as stack:  # the files are opened again for each attempt
        files = [("content", _part(stack, content))]
        files += [("style", _part(stack, style)) for style in styles]
        resp = call(
            session,
            "POST",
            f"{base.rstrip('/')}{API}/jobs",
            files=files,
            data=form_fields(params),
            headers=dict(headers),
        )
    return resp.json()


def get_job(session: requests.Session, base: str, job: Mapping[str, Any] | str) -> dict[str, Any]:
    return call(session, "GET", job_url(base, job)).json()


def get_progress(
    session: requests.Session, base: str, job: Mapping[str, Any] | str, after: str | None
) -> dict[str, Any]:
    """``{entries, last_id, status}``: the entries after stream id ``after``."""
    query = {"after": after} if after else None
    return call(session, "GET", job_url(base, job, "progress"), params=query).json()


def cancel_job(session: requests.Session, base: str, job: Mapping[str, Any] | str) -> None:
    """Ask the server to stop the job (idempotent; 409 once it has finished)."""
    call(session, "POST", job_url(base, job, "cancel"))


def download_result(
    session: requests.Session, base: str, job: Mapping[str, Any] | str, out: Path
) -> Path:
    """Stream the best image to ``out`` (written whole or not at all)."""
    resp = call(session, "GET", job_url(base, job, "result"), stream=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(f".{out.name}.part")
    try:
        with partial.open("wb") as fh:
            for chunk in resp.iter_content(chunk_size=1 << 16):
                fh.write(chunk)
        os.replace(partial, out)
    finally:
        resp.close()
        partial.unlink(missing_ok=True)
    return out


Update = Callable[[dict[str, Any], list[dict[str, Any]]], None]


def follow(
    session: requests.Session,
    base: str,
    job: dict[str, Any],
    on_update: Update | None = None,
    interval: float = POLL_INTERVAL,
    grace: float = OUTAGE_GRACE,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any]:
    """Poll the progress stream until the job ends; the final job JSON.

    The job JSON's ``terminal`` says when it has ended (the server's rule, not a list of
    status names kept here). ``on_update(job, new_entries)`` is called after every poll. A
    server that restarts or answers 5xx for less than ``grace`` seconds is waited out; 4xx
    ends the wait at once.
    """
    after: str | None = None
    status = job.get("status")
    outage_since: float | None = None
    while True:
        try:
            data = get_progress(session, base, job, after)
            if data.get("status") != status or job.get("terminal"):
                job = get_job(session, base, job)  # totals, timestamps, error, terminal
                status = job.get("status")
        except (Unreachable, ApiError) as exc:
            if isinstance(exc, ApiError) and exc.status < 500:
                raise
            outage_since = outage_since or time.monotonic()
            if time.monotonic() - outage_since > grace:
                raise
            sleep(interval)
            continue
        outage_since = None
        after = data.get("last_id") or after
        if on_update is not None:  # with a tiled job's progress within its iteration
            on_update({**job, "tiles": data.get("tiles")}, list(data.get("entries") or []))
        if job.get("terminal"):
            return job
        sleep(interval)


# ---- the command ---------------------------------------------------------------------------


@click.command()
@click.argument("content", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument(
    "styles",
    nargs=-1,
    required=True,
    metavar="STYLE [STYLE ...]",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
)
@server_option
@click.option(
    "--token",
    default=lambda: load_client_settings().api_token,
    show_default="$STYLEQUEUE_API_TOKEN",
    help="API token. Without one, the job belongs to this command's session and cannot "
    "be looked up later.",
)
@click.option("--preset", help="Server preset, e.g. quick, balanced, default.")
@click.option("--iterations", type=int, help="Optimisation steps.")
@click.option("--size", "max_size", type=int, help="Longest side of the output, in pixels.")
@click.option("--seed", type=int)
@click.option(
    "--preserve-colors/--no-preserve-colors", default=None, help="Keep the content photo's colours."
)
@click.option("--weights", type=click.Choice(["imagenet", "random"]), help="VGG19 weights.")
@click.option("--content-weight", type=float)
@click.option("--style-weight", type=float)
@click.option("--tv-weight", type=float)
@click.option("--learning-rate", type=float)
@click.option("--snapshot-every", type=int, help="Save a snapshot every N iterations (0: none).")
@click.option("--optimizer", type=click.Choice(OPTIMIZERS), help="Optimiser [server: adam].")
@click.option("--scales", type=int, help="Coarse to fine: paint at 1/2, 1/4... first (1: off).")
@click.option(
    "--webhook",
    help="URL told of the job's events by a signed POST (Standard Webhooks; the signing "
    "secret: GET /api/v1/webhook-secret).",
)
@click.option(
    "--webhook-events",
    help="Which events, comma-separated: started, progress, completed [all three].",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where to write the result [default: <content>-styled.png].",
)
@click.option("--no-wait", is_flag=True, help="Print the job id and return at once.")
def submit(
    content: Path,
    styles: tuple[Path, ...],
    server: str,
    token: str | None,
    output: Path | None,
    no_wait: bool,
    **params: Any,
) -> None:
    """Paint CONTENT in the style of STYLE (several styles are blended) on a stylequeue server."""
    from rich.console import Console

    console = Console(stderr=True, soft_wrap=True)  # URLs stay whole
    session = make_session(token)
    # one key per invocation: this command's own retries never make a second job
    job = create_job(session, server, content, styles, params, key=str(uuid.uuid4()))
    if no_wait:
        if not token:
            console.print(
                "[yellow]no --token: this job belongs to this command's session; "
                "you will not be able to look it up later[/]"
            )
        click.echo(job["id"])
        return
    dashboard = (job.get("links") or {}).get("dashboard")
    where = f" - watch it at {urljoin(server.rstrip('/') + '/', dashboard)}" if dashboard else ""
    console.print(f"job [bold]{job['id']}[/] {job.get('status', 'queued')}{where}")
    try:
        job = _follow_with_bar(session, server, job, console)
    except KeyboardInterrupt:
        _interrupted(console, session, server, job, token)
        sys.exit(130)
    if job.get("status") != "succeeded":
        reason = job.get("error") or "no reason given"
        raise JobEnded(f"job {job['id']} {job.get('status')}: {reason}")
    out = output or Path(f"{content.stem}-styled.png")
    download_result(session, server, job, out)
    best = job.get("best_loss")
    note = "" if best is None else f" (best loss {best:.4g}, iteration {job.get('best_iteration')})"
    console.print(f"saved {out}{note}")


def _interrupted(
    console: Any, session: requests.Session, base: str, job: dict[str, Any], token: str | None
) -> None:
    """Ctrl-C stops the watching, never the job, unless the user says so."""
    console.print(f"\nstopped watching job {job['id']}; it keeps running on the server.")
    if token:
        from_env = token == load_client_settings().api_token
        secret = "$STYLEQUEUE_API_TOKEN" if from_env else "<token>"
        auth = f' -H "Authorization: Bearer {secret}"'  # never echo the token itself
        console.print(f"cancel it with: curl -X POST{auth} {job_url(base, job, 'cancel')}")
        return
    # Without a token the job belongs to this process's session cookie: once we exit, nobody
    # can cancel it, so offer to do it now.
    if sys.stdin.isatty() and click.confirm("cancel it now (only this session can)?", err=True):
        try:
            cancel_job(session, base, job)
            console.print(f"asked the server to cancel job {job['id']}")
        except ClientError as exc:
            console.print(f"could not cancel: {exc.format_message()}")
    else:
        console.print("it belongs to this command's session; use --token to be able to cancel it")


def _follow_with_bar(
    session: requests.Session, base: str, job: dict[str, Any], console: Any
) -> dict[str, Any]:
    """``follow`` drawn as a rich progress bar: iteration/total, loss, elapsed, ETA."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = (
        SpinnerColumn(),
        TextColumn("{task.description:<9}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]}"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task(str(job.get("status", "queued")), total=_total(job), loss="-")

        def update(current: dict[str, Any], entries: list[dict[str, Any]]) -> None:
            fields: dict[str, Any] = {"description": str(current.get("status"))}
            tiles = current.get("tiles")
            if tiles:  # a print, painted in tiles: how far its iteration is
                fields["description"] = f"tile {tiles['done']}/{tiles['total']}"
            done = current.get("iterations_done") or 0
            if entries:
                last = entries[-1]
                done = max(done, int(last.get("iteration") or 0))
                if last.get("loss") is not None:
                    fields["loss"] = f"{float(last['loss']):.4g}"
            total = _total(current)
            if current.get("status") == "succeeded" and total:
                done = total
            bar.update(task, total=total, completed=done, **fields)

        return follow(session, base, job, update)


def _total(job: Mapping[str, Any]) -> int | None:
    total = job.get("iterations_total") or (job.get("params") or {}).get("iterations")
    return int(total) if total else None


def _part(stack: ExitStack, path: Path) -> tuple[str, Any, str]:
    mime = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return path.name, stack.enter_context(path.open("rb")), mime


def _reason(exc: Exception) -> str:
    """``connection refused`` rather than urllib3's nested repr."""
    found = re.search(r"\[Errno -?\d+\] ([^'\")]+)", str(exc))
    if found:
        return found.group(1).strip().lower()
    return "timed out" if isinstance(exc, requests.Timeout) else type(exc).__name__
