"""``stylequeue submit`` sends one Idempotency-Key per invocation, so its own retries are safe.

A proxy on loopback between the command's client and a live server passes the first submit
to the server, which takes the job, and then drops the connection instead of answering:
what a network blip after the upload looks like. The client sends it again, with the same
key, and the server answers the job it already made: one job, not two.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests
from sqlalchemy import func, select

from stylequeue.cli import submit as cli
from stylequeue.shared.db import session_scope
from stylequeue.shared.models import Job
from stylequeue.shared.settings import Settings
from stylequeue.web import create_app
from tests.web.live import serve


def _read_request(conn: socket.socket) -> bytes:
    """One HTTP request (head and a Content-Length body) from ``conn``."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    while len(body) < length:
        body += conn.recv(65536)
    return head + b"\r\n\r\n" + body


@contextmanager
def lossy_proxy(upstream: str, drop_first: int) -> Iterator[tuple[str, list[bytes]]]:
    """A loopback proxy to ``upstream`` that passes every request on, but for the first
    ``drop_first`` submits closes the client's connection instead of answering. Yields its
    URL and the request heads it forwarded."""
    host, port = urlsplit(upstream).hostname, urlsplit(upstream).port
    listener = socket.create_server(("127.0.0.1", 0))
    seen: list[bytes] = []
    drops = [drop_first]

    def handle(conn: socket.socket) -> None:
        with conn:
            request = _read_request(conn)
            if not request:
                return
            head = request.split(b"\r\n\r\n", 1)[0]
            # one request per upstream connection (the test server answers HTTP/1.0)
            with socket.create_connection((host, port), timeout=30) as up:
                up.sendall(request)
                answer = b""
                while chunk := up.recv(65536):
                    answer += chunk
            seen.append(head)
            if head.startswith(b"POST /api/v1/jobs ") and drops[0] > 0:
                drops[0] -= 1
                conn.shutdown(socket.SHUT_RDWR)  # the server took it; the answer is lost
                return
            conn.sendall(answer)

    stop = threading.Event()
    listener.settimeout(0.1)  # closing a socket does not wake a blocked accept()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.settimeout(30)
            threading.Thread(target=handle, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}", seen
    finally:
        stop.set()
        thread.join(5)
        listener.close()


def _count(settings: Settings) -> int:
    with session_scope(settings.database_url) as session:
        return session.scalar(select(func.count()).select_from(Job)) or 0


MAKE_SESSION = cli.make_session


def _session() -> requests.Session:
    session = MAKE_SESSION("alice-token")
    session.headers["Connection"] = "close"  # one request per connection through the proxy
    return session


def test_a_lost_answer_is_retried_with_the_same_key(
    settings: Settings, pictures: tuple[Path, Path]
) -> None:
    content, style = pictures
    with (
        serve(create_app(settings)) as (base, log),
        lossy_proxy(base, drop_first=1) as (
            proxy,
            seen,
        ),
    ):
        job = cli.create_job(
            _session(), proxy, content, [style], {"iterations": 5, "max_size": 64},
            key="one-per-invocation", sleep=lambda _s: None,
        )  # fmt: skip
    posts = [h for h in seen if h.startswith(b"POST /api/v1/jobs ")]
    assert len(posts) == 2 and all(b"Idempotency-Key: one-per-invocation" in h for h in posts)
    assert [a.status for a in log.answers if a.method == "POST"] == [201, 200]
    assert _count(settings) == 1
    assert job["status"] == "queued" and job["id"] in (log.answers[-1].location or "")


def test_without_a_key_a_lost_answer_is_not_sent_again(
    settings: Settings, pictures: tuple[Path, Path]
) -> None:
    content, style = pictures
    with (
        serve(create_app(settings)) as (base, log),
        lossy_proxy(base, drop_first=1) as (
            proxy,
            _seen,
        ),
        pytest.raises(cli.Unreachable),
    ):
        cli.create_job(_session(), proxy, content, [style], {"iterations": 5, "max_size": 64})
    assert [a.status for a in log.answers if a.method == "POST"] == [201]
    assert _count(settings) == 1  # made, but the client never learnt it: hence the key


def test_the_command_sends_a_new_key_each_invocation(
    settings: Settings, pictures: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    from click.testing import CliRunner

    content, style = pictures
    monkeypatch.setattr(cli, "SUBMIT_BACKOFF", 0.0)
    args = [str(content), str(style), "--token", "alice-token", "--iterations", "5",
            "--size", "64", "--no-wait"]  # fmt: skip
    with (
        serve(create_app(settings)) as (base, log),
        lossy_proxy(base, drop_first=1) as (
            proxy,
            seen,
        ),
    ):
        monkeypatch.setattr(cli, "make_session", lambda token: _session())
        first = CliRunner().invoke(cli.submit, [*args, "--server", proxy])
        second = CliRunner().invoke(cli.submit, [*args, "--server", proxy])
    assert first.exit_code == 0 and second.exit_code == 0, first.output + second.output
    keys = [
        line.split(b": ", 1)[1]
        for head in seen
        if head.startswith(b"POST /api/v1/jobs ")
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"idempotency-key:")
    ]
    assert len(keys) == 3 and keys[0] == keys[1] != keys[2]  # retry: same; next run: new
    assert [a.status for a in log.answers if a.method == "POST"] == [201, 200, 201]
    assert _count(settings) == 2
    assert first.output.strip() != second.output.strip()  # two job ids
