"""The active-job limits under real concurrency: 16 POSTs at once, from real threads, over
HTTP to a threaded server, on SQLite and PostgreSQL. The early count in the view is only a
shortcut; the insert's own transaction decides (``shared.quota.insert_within_caps``)."""

from __future__ import annotations

import io
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace

import requests
from sqlalchemy import func, select
from werkzeug.serving import make_server

from stylequeue.shared.db import session_scope
from stylequeue.shared.models import Job
from stylequeue.shared.settings import Settings
from stylequeue.web import create_app
from tests.web import images
from tests.web.helpers import ALICE

POSTS = 16


def serve(settings: Settings) -> Iterator[str]:
    server = make_server("127.0.0.1", 0, create_app(settings), threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="limits-server", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(10)
        server.server_close()


def post_at_once(url: str, headers: list[dict[str, str]]) -> list[requests.Response]:
    """One POST /api/v1/jobs per entry of ``headers``, all released together."""
    barrier = threading.Barrier(len(headers))
    content, style = images.png(), images.jpeg()
    answers: list[requests.Response] = []
    lock = threading.Lock()

    def post(extra: dict[str, str]) -> None:
        with requests.Session() as http:
            if "Authorization" not in extra:  # a browser: its own session and CSRF token
                token = http.get(f"{url}/api/v1/session", timeout=30).json()["csrf_token"]
                extra = {**extra, "X-CSRF-Token": token}
            barrier.wait(timeout=30)
            answer = http.post(
                f"{url}/api/v1/jobs",
                headers=extra,
                data={"iterations": "5", "max_size": "64"},
                files={
                    "content": ("c.png", io.BytesIO(content)),
                    "style": ("s.jpg", io.BytesIO(style)),
                },
                timeout=120,
            )
        with lock:
            answers.append(answer)

    threads = [threading.Thread(target=post, args=(h,)) for h in headers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=180)
    assert len(answers) == len(headers)
    return answers


def active_rows(settings: Settings) -> int:
    with session_scope(settings.database_url) as session:
        query = select(func.count()).select_from(Job).where(Job.status == "queued")
        return session.scalar(query) or 0


def roomy(settings: Settings, max_active_jobs: int = 100, **caps: int) -> Settings:
    """No rate limit in the way: these tests are about the active-job counts."""
    limits = replace(settings.limits, max_active_jobs=max_active_jobs)
    return replace(settings, limits=limits, submit_rate_limit="1000/minute", **caps)


def test_sixteen_posts_of_one_owner_never_pass_the_limit(
    settings: Settings, database_backend: str
) -> None:
    settings = roomy(settings, max_active_jobs=10)
    url = next(serve_it := serve(settings))
    try:
        answers = post_at_once(url, [dict(ALICE) for _ in range(POSTS)])
    finally:
        serve_it.close()
    codes = Counter(a.status_code for a in answers)
    assert codes == {201: 10, 429: 6}, [a.text[:200] for a in answers if a.status_code >= 500]
    assert active_rows(settings) == 10


def test_sixteen_anonymous_sessions_never_pass_the_anonymous_cap(
    settings: Settings, database_backend: str
) -> None:
    settings = roomy(settings, anonymous_max_active_jobs=5, max_active_jobs_per_address=100)
    url = next(serve_it := serve(settings))
    try:
        answers = post_at_once(url, [{} for _ in range(POSTS)])
    finally:
        serve_it.close()
    codes = Counter(a.status_code for a in answers)
    assert codes == {201: 5, 429: 11}, [a.text[:200] for a in answers if a.status_code >= 500]
    assert {a.json()["error"]["code"] for a in answers if a.status_code == 429} == {
        "anonymous_capacity"
    }
    assert active_rows(settings) == 5


def test_sixteen_anonymous_sessions_of_one_address_never_pass_its_cap(
    settings: Settings, database_backend: str
) -> None:
    settings = roomy(settings, anonymous_max_active_jobs=100, max_active_jobs_per_address=3)
    url = next(serve_it := serve(settings))
    try:
        answers = post_at_once(url, [{} for _ in range(POSTS)])
    finally:
        serve_it.close()
    codes = Counter(a.status_code for a in answers)
    assert codes == {201: 3, 429: 13}, [a.text[:200] for a in answers if a.status_code >= 500]
    assert {a.json()["error"]["code"] for a in answers if a.status_code == 429} == {
        "address_capacity"
    }
    assert active_rows(settings) == 3
