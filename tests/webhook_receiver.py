"""A real webhook receiver for the tests: an HTTP(S) server on loopback, in a thread.

It records every request (path, headers, body) and answers from a script: a list of
answers (status, headers, a hold before answering) taken in order, then the default. It
checks nothing itself: the tests verify what it received with the ``standardwebhooks``
reference library, as a receiver would (:meth:`Receiver.verified`).
"""

from __future__ import annotations

import json
import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from standardwebhooks import Webhook

WAIT = 120.0  # a poll's patience, never a timing assertion


@dataclass(frozen=True)
class Answer:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    hold: float = 0.0  # seconds before answering (a slow receiver)


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]  # lower-case names
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class Receiver:
    def __init__(self, default: Answer | None = None) -> None:
        self.default = default or Answer()
        self.script: list[Answer] = []
        self.requests: list[Received] = []
        self.answered = 0  # requests that got their answer
        self._lock = threading.Lock()
        self._released = threading.Event()  # ends every hold (teardown)
        self.url = ""
        self._server: ThreadingHTTPServer | None = None

    # ---- what the tests set and read ------------------------------------------------------

    def answer(self, *answers: Answer) -> None:
        """Answer the next requests with these, in order (then the default)."""
        with self._lock:
            self.script.extend(answers)

    def received(self) -> list[Received]:
        with self._lock:
            return list(self.requests)

    def wait_for(self, count: int, timeout: float = WAIT) -> list[Received]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.received()
            if len(got) >= count:
                return got
            time.sleep(0.02)
        raise AssertionError(f"{count} requests not received within {timeout}s: {self.received()}")

    def wait_until(self, predicate: Any, what: str, timeout: float = WAIT) -> list[Received]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.received()
            if predicate(got):
                return got
            time.sleep(0.02)
        raise AssertionError(f"{what} not received within {timeout}s: {self.received()}")

    @staticmethod
    def verified(request: Received, *secrets: str) -> dict[str, Any]:
        """The body, once ``standardwebhooks`` accepts its signature under one of
        ``secrets`` (raises ``WebhookVerificationError`` otherwise)."""
        error: Exception | None = None
        for secret in secrets:
            try:
                return Webhook(secret).verify(request.body, request.headers)  # type: ignore[no-any-return]
            except Exception as exc:
                error = exc
        assert error is not None
        raise error

    # ---- the server -------------------------------------------------------------------------

    def _next_answer(self) -> Answer:
        with self._lock:
            return self.script.pop(0) if self.script else self.default

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                headers = {k.lower(): v for k, v in self.headers.items()}
                with receiver._lock:
                    receiver.requests.append(Received(self.path, headers, body))
                answer = receiver._next_answer()
                if answer.hold and receiver._released.wait(answer.hold):
                    return  # torn down while holding: no answer at all
                self.send_response(answer.status)
                for name, value in answer.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")
                with receiver._lock:
                    receiver.answered += 1

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler

    @contextmanager
    def serving(
        self, context: ssl.SSLContext | None = None, host: str = "127.0.0.1"
    ) -> Iterator[Receiver]:
        server = ThreadingHTTPServer((host, 0), self._handler())
        server.daemon_threads = True
        scheme = "http"
        if context is not None:
            server.socket = context.wrap_socket(server.socket, server_side=True)
            scheme = "https"
        self._server = server
        self.port = server.server_address[1]
        self.url = f"{scheme}://{host}:{self.port}/hook"
        thread = threading.Thread(target=server.serve_forever, name="webhook-receiver", daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._released.set()
            server.shutdown()
            server.server_close()
            thread.join(10)
