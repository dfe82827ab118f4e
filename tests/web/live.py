"""The app served over real HTTP on loopback, in a thread, with a log of what it answered.

For the tests that need a socket rather than the Flask test client: concurrent clients, the
Schemathesis run, the CLI against a server whose answers get lost.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from flask import Flask
from werkzeug.serving import make_server

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


@dataclass(frozen=True)
class Answer:
    method: str
    path: str
    status: int
    location: str | None


@dataclass
class AnswerLog:
    """A WSGI middleware that notes each request's method, path, status and Location."""

    app: WSGIApp
    answers: list[Answer] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        def noting(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            location = next((v for k, v in headers if k.lower() == "location"), None)
            answer = Answer(
                environ["REQUEST_METHOD"], environ["PATH_INFO"], int(status[:3]), location
            )
            with self._lock:
                self.answers.append(answer)
            return start_response(status, headers, exc_info)

        return self.app(environ, noting)


@contextmanager
def serve(app: Flask) -> Iterator[tuple[str, AnswerLog]]:
    """``app`` on a free loopback port (threaded: one thread per request); yields its base
    URL and the log of its answers; stopped on exit."""
    log = AnswerLog(app.wsgi_app)
    app.wsgi_app = log  # type: ignore[method-assign]
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per request
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="live-app", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", log
    finally:
        server.shutdown()
        thread.join(10)
        server.server_close()
        app.wsgi_app = log.app  # type: ignore[method-assign]
