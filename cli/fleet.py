"""``stylequeue fleet``: the fleet in a terminal, once or followed (``--watch``).

A client of ``GET /api/v1/admin/fleet`` (an admin token: ``--token`` or
``$STYLEQUEUE_ADMIN_TOKEN``, one of the server's ``STYLEQUEUE_ADMIN_TOKENS``), drawn with
rich: a table of the workers (host, device, weights, precision, memory, the job each runs
now with its iteration and speed, when each was last seen) and a line for the queue and the
last hour. ``--watch`` redraws it in place (rich Live) every ``--interval`` seconds; when
the output is not a terminal it prints one table per round instead.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

import click
import requests

from stylequeue.cli.options import server_option
from stylequeue.cli.submit import API, ClientError, call, make_session
from stylequeue.shared.settings import load_client_settings

OUTAGE_GRACE = 60.0  # --watch: seconds of failed polls (server restarting) before giving up


def get_fleet(session: requests.Session, base: str) -> dict[str, Any]:
    return call(session, "GET", f"{base.rstrip('/')}{API}/admin/fleet", timeout=(5, 30)).json()


# ---- drawing --------------------------------------------------------------------------------


def human_bytes(n: object) -> str:
    if not isinstance(n, int | float):
        return "-"
    value, units = float(n), ("B", "KiB", "MiB", "GiB", "TiB")
    unit = 0
    while value >= 1024 and unit < len(units) - 1:
        value, unit = value / 1024, unit + 1
    digits = 0 if value >= 10 or unit == 0 else 1
    return f"{value:.{digits}f} {units[unit]}"


def human_seconds(seconds: object) -> str:
    """``42s``, ``3m05s``, ``2h07m``; ``-`` when unknown."""
    if not isinstance(seconds, int | float):
        return "-"
    s = max(0, round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def _device(worker: Mapping[str, Any]) -> str:
    device, name = worker.get("device"), worker.get("device_name")
    if not device:
        return "-"
    return f"{device}: {name}" if name else str(device)


def _memory(worker: Mapping[str, Any]) -> str:
    memory = worker.get("memory")
    if not isinstance(memory, Mapping) or memory.get("used_bytes") is None:
        return "-"
    kind = "GPU" if memory.get("kind") == "gpu" else "RSS"
    return f"{human_bytes(memory['used_bytes'])} {kind}"


def _weights(worker: Mapping[str, Any]) -> str:
    weights = str(worker.get("weights") or "-")
    if worker.get("weights_ok") is False:
        return f"{weights} [red](cannot load)[/]"
    return weights


def _job(worker: Mapping[str, Any]) -> tuple[str, str, str]:
    job = worker.get("job")
    if not isinstance(job, Mapping):
        return "[dim]idle[/]", "-", "-"
    speed = job.get("it_per_s")
    return (
        str(job.get("id", "?")),
        f"{job.get('iteration', 0)}/{job.get('iterations_total', '?')}",
        f"{speed:.2f}" if isinstance(speed, int | float) else "-",
    )


def render(data: Mapping[str, Any], server: str) -> Any:
    """The fleet as one rich renderable: the workers table and the summary lines."""
    from rich.console import Group, RenderableType
    from rich.table import Table
    from rich.text import Text

    workers = list(data.get("workers") or [])
    table = Table(title=f"stylequeue fleet at {server}", title_justify="left", expand=False)
    for name, options in (
        ("worker", {"no_wrap": True, "style": "bold"}), ("host", {}), ("device", {}),
        ("weights", {}), ("precision", {}), ("memory", {"justify": "right"}),
        ("job", {"no_wrap": True}), ("iteration", {"justify": "right"}),
        ("it/s", {"justify": "right"}), ("last seen", {"justify": "right"}),
    ):  # fmt: skip
        table.add_column(name, **options)
    for worker in workers:
        job, iteration, speed = _job(worker)
        seen = worker.get("seen_seconds_ago")
        table.add_row(
            str(worker.get("name", "?")), str(worker.get("host") or "-"), _device(worker),
            _weights(worker), str(worker.get("precision") or "-"), _memory(worker),
            job, iteration, speed, f"{human_seconds(seen)} ago" if seen is not None else "-",
        )  # fmt: skip
    queue, hour = data.get("queue") or {}, data.get("last_hour") or {}
    lines: list[RenderableType] = [table]
    if not workers:
        lines = [Text("no worker online: jobs wait in the queue", "yellow")]
    wait = queue.get("oldest_wait_seconds")
    lines.append(
        Text.from_markup(
            f"queue: [bold]{queue.get('depth', 0)}[/] waiting"
            + (f", oldest for {human_seconds(wait)}" if wait is not None else "")
            + f"; running: [bold]{data.get('running', 0)}[/]"
        )
    )
    orphans = data.get("running_without_worker") or 0
    if orphans:
        lines.append(Text(f"{orphans} running job(s) without a live worker (the sweeper "
                          "re-queues them once their lock expires)", "yellow"))  # fmt: skip
    lines.append(
        Text.from_markup(
            f"last hour: [green]{hour.get('succeeded', 0)} succeeded[/], "
            f"[red]{hour.get('failed', 0)} failed[/], {hour.get('canceled', 0)} canceled"
        )
    )
    generated = data.get("generated_at")
    if isinstance(generated, str):
        stamp = datetime.fromisoformat(generated).astimezone().strftime("%H:%M:%S")
        lines.append(Text(f"as of {stamp}", "dim"))
    return Group(*lines)


# ---- the command ---------------------------------------------------------------------------


def watch(
    fetch: Callable[[], dict[str, Any]],
    show: Callable[[dict[str, Any]], None],
    interval: float,
    grace: float = OUTAGE_GRACE,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Fetch and show forever (until Ctrl-C); a server away for less than ``grace`` seconds
    is waited out, a refusal (4xx) ends it."""
    from stylequeue.cli.submit import ApiError, Unreachable

    outage_since: float | None = None
    while True:
        try:
            data = fetch()
        except (Unreachable, ApiError) as exc:
            if isinstance(exc, ApiError) and exc.status < 500:
                raise
            outage_since = outage_since or time.monotonic()
            if time.monotonic() - outage_since > grace:
                raise
        else:
            outage_since = None
            show(data)
        sleep(interval)


@click.command()
@server_option
@click.option(
    "--token",
    default=lambda: load_client_settings().admin_token,
    show_default="$STYLEQUEUE_ADMIN_TOKEN",
    help="An admin token (one of the server's STYLEQUEUE_ADMIN_TOKENS).",
)
@click.option("--watch", "follow", is_flag=True, help="Keep the table up to date (Ctrl-C stops).")
@click.option(
    "--interval",
    type=click.FloatRange(min=0.2),
    default=2.0,
    show_default=True,
    help="Seconds between refreshes with --watch.",
)
def fleet(server: str, token: str | None, follow: bool, interval: float) -> None:
    """Show the workers, what each runs now, the queue and the last hour's jobs."""
    from rich.console import Console

    if not token:
        raise ClientError(
            "the fleet is for operators: pass --token or set STYLEQUEUE_ADMIN_TOKEN to one of "
            "the server's STYLEQUEUE_ADMIN_TOKENS"
        )
    console = Console()
    session = make_session(token)
    session.headers["User-Agent"] = "stylequeue-fleet"
    data = get_fleet(session, server)
    if not follow:
        console.print(render(data, server))
        return
    try:
        if console.is_terminal:
            from rich.live import Live

            with Live(render(data, server), console=console, auto_refresh=False) as live:
                watch(
                    lambda: get_fleet(session, server),
                    lambda fresh: live.update(render(fresh, server), refresh=True),
                    interval,
                )
        else:  # a pipe or a file: one table per round, nothing redrawn
            console.print(render(data, server))
            watch(lambda: get_fleet(session, server),
                  lambda fresh: console.print(render(fresh, server)), interval)  # fmt: skip
    except KeyboardInterrupt:
        return
