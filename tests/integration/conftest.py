"""Integration: the whole service through its HTTP API (and the ``stylequeue submit`` CLI).

One stack per module and database backend (SQLite always, PostgreSQL when
``STYLEQUEUE_TEST_POSTGRES_URL`` is set): a private redis-server (other workers consuming the
``style`` queue of a shared Redis would take our messages), a migrated database, a local
object folder (or moto's S3 server for one case), ``stylequeue.web.create_app(settings)`` served by
werkzeug on a free port in a thread, and one real ``celery worker`` subprocess with random
weights. Tests talk to it over HTTP with ``requests`` only; they read the database or Redis
directly only to check what the API cannot show.
"""

from __future__ import annotations

import io
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis
import requests
from PIL import Image

from stylequeue.shared.settings import Settings, load_settings
from tests import services
from tests.conftest import POSTGRES_ENV, TEST_LIMITS
from tests.openapi_contract import RequestsContract
from tests.services import served
from tests.worker_process import WorkerProcess

BACKENDS = ["sqlite"] + (["postgres"] if os.environ.get(POSTGRES_ENV) else [])
API = "/api/v1"
TOKENS = {"alice": "alice-token", "bob": "bob-token"}
# Room for the long job the cancel test stops mid-run, and for several jobs per owner.
LIMITS = replace(TEST_LIMITS, max_iterations=5000, max_active_jobs=20)
WAIT = 120.0  # generous: a poll's patience, never a timing assertion
TERMINAL = ("succeeded", "failed", "canceled")

# The content photo is wider than any max_size the tests ask for, so the job scales it down.
CONTENT_WH = (80, 60)


# ---- images ------------------------------------------------------------------------------


def content_png(width: int = CONTENT_WH[0], height: int = CONTENT_WH[1]) -> bytes:
    """A smooth photo-like picture (gradients and a disc)."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    disc = ((x - width / 2) ** 2 + (y - height / 2) ** 2) < (min(width, height) / 3) ** 2
    img = np.stack([x / (width - 1), y / (height - 1), np.where(disc, 0.9, 0.2)], axis=-1)
    return encode_png((img * 255).astype(np.uint8))


def style_png(size: int = 40) -> bytes:
    """A striped, noisy 'painting'."""
    rng = np.random.default_rng(7)
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    stripes = 0.5 + 0.5 * np.sin((x + y) / 2.5)
    img = np.stack([stripes, 1 - stripes, 0.5 * stripes], axis=-1)
    img = np.clip(img + rng.normal(0, 0.08, img.shape), 0, 1)
    return encode_png((img * 255).astype(np.uint8))


def encode_png(pixels: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels), "RGB").save(out, format="PNG")
    return out.getvalue()


def open_png(data: bytes) -> Image.Image:
    """The decoded PNG (fully loaded: a truncated file raises)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"not a PNG: {data[:16]!r}"
    img = Image.open(io.BytesIO(data))
    img.load()
    assert img.format == "PNG"
    return img


# ---- the stack ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Stack:
    settings: Settings
    url: str  # base URL of the live server, no trailing slash
    worker: WorkerProcess

    def api(self, path: str) -> str:
        """Absolute URL of an API path (``/jobs/..``) or of a server-given link (``/api/..``)."""
        return self.url + (path if path.startswith(API) else API + path)

    def redis(self) -> redis.Redis:
        return redis.Redis.from_url(self.settings.redis_url)


def token_session(name: str) -> requests.Session:
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {TOKENS[name]}"
    return session


def cookie_session(stack: Stack) -> requests.Session:
    """A browser-like client: owner id in the signed session cookie, CSRF token header."""
    session = requests.Session()
    resp = session.get(stack.api("/session"), timeout=30)
    assert resp.status_code == 200, resp.text
    info = resp.json()
    assert info["auth"] == "session" and info["owner"].startswith("web:"), info
    assert info["csrf_token"], info
    assert "stylequeue_session" in session.cookies, session.cookies
    session.headers["X-CSRF-Token"] = info["csrf_token"]
    return session


def submit(
    stack: Stack,
    session: requests.Session,
    *,
    content: bytes | None = None,
    style: bytes | None = None,
    **fields: Any,
) -> requests.Response:
    """POST /api/v1/jobs as multipart; ``fields`` become form fields (``weights`` random)."""
    data = {"weights": "random", "seed": "3", **{k: str(v) for k, v in fields.items()}}
    files = [
        ("content", ("content.png", content or content_png(), "image/png")),
        ("style", ("style.png", style or style_png(), "image/png")),
    ]
    return session.post(stack.api("/jobs"), files=files, data=data, timeout=60)


def submit_ok(stack: Stack, session: requests.Session, **fields: Any) -> dict[str, Any]:
    resp = submit(stack, session, **fields)
    assert resp.status_code == 201, resp.text
    job = resp.json()
    assert job["status"] in ("queued", "running", "succeeded"), job
    return job


def get_json(session: requests.Session, url: str) -> dict[str, Any]:
    resp = session.get(url, timeout=30)
    assert resp.status_code == 200, f"GET {url}: {resp.status_code} {resp.text}"
    return resp.json()


def wait_for_job(
    stack: Stack,
    session: requests.Session,
    job_id: str,
    until: Callable[[dict[str, Any]], bool],
    what: str,
    timeout: float = WAIT,
) -> dict[str, Any]:
    """Poll GET /jobs/<id> until ``until(job)``; the worker's log in the failure message."""
    deadline = time.monotonic() + timeout
    job: dict[str, Any] = {}
    while time.monotonic() < deadline:
        job = get_json(session, stack.api(f"/jobs/{job_id}"))
        if until(job):
            return job
        time.sleep(0.05)
    raise AssertionError(
        f"job {job_id}: {what} not reached within {timeout}s: {job}\n{stack.worker.log_tail()}"
    )


def wait_for_status(
    stack: Stack, session: requests.Session, job_id: str, *statuses: str
) -> dict[str, Any]:
    return wait_for_job(
        stack, session, job_id, lambda j: j["status"] in statuses, f"status in {statuses}"
    )


def wait_until_finished(stack: Stack, session: requests.Session, job_id: str) -> dict[str, Any]:
    return wait_for_status(stack, session, job_id, *TERMINAL)


def build_settings(var_dir: Path, database_url: str, redis_url: str, **overrides: Any) -> Settings:
    base = load_settings({
        "STYLEQUEUE_VAR_DIR": str(var_dir),
        "STYLEQUEUE_VGG19_WEIGHTS": "random",
        "STYLEQUEUE_SECRET_KEY": "integration-secret",
        "STYLEQUEUE_API_TOKENS": ",".join(f"{n}={t}" for n, t in TOKENS.items()),
        "STYLEQUEUE_LOCK_TTL_SECONDS": "5",
    })  # fmt: skip
    return replace(base, database_url=database_url, redis_url=redis_url, limits=LIMITS, **overrides)


def start_stack(settings: Settings, log_dir: Path) -> Iterator[Stack]:
    """Live server + warm worker for ``settings``; both stopped afterwards (worker log shown
    in the report of a failing test's teardown)."""
    worker = WorkerProcess(settings, log_dir)
    with served(settings, "integration-server") as url:
        try:
            worker.start()
            yield Stack(settings, url, worker)
        finally:
            print(worker.log_tail(200), file=sys.stderr)
            worker.stop()


# ---- fixtures ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def module_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A private redis-server for this module: ``redis://127.0.0.1:<port>/0``."""
    with services.private_redis(tmp_path_factory.mktemp("redis")) as (url, _proc):
        yield url


@pytest.fixture(scope="module", params=BACKENDS)
def stack_db_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A migrated database for the module: a SQLite file, or a fresh PostgreSQL database."""
    with services.migrated_database(request.param, tmp_path_factory.mktemp("db")) as url:
        yield url


@pytest.fixture(scope="module")
def stack(
    stack_db_url: str, module_redis: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    """The module's stack on this backend (a folder for objects)."""
    client = redis.Redis.from_url(module_redis)
    client.flushdb()  # nothing left over from the other backend's run of this module
    client.close()
    settings = build_settings(tmp_path_factory.mktemp("var"), stack_db_url, module_redis)
    assert settings.storage_url.startswith("file://"), settings.storage_url
    yield from start_stack(settings, tmp_path_factory.mktemp("logs"))


@pytest.fixture(autouse=True)
def contract_checked_requests(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every /api/v1 response these tests read is checked against the server's OpenAPI
    document (tests/openapi_contract.py)."""
    RequestsContract().install(monkeypatch)
