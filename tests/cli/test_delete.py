"""``stylequeue delete`` against the real app served over HTTP (werkzeug in a thread; real
Redis, SQLite and PostgreSQL, a local folder). A real subprocess against a live stack with a
worker: tests/integration/test_delete.py."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from click.testing import CliRunner
from werkzeug.serving import make_server

from stylequeue.cli.delete import delete
from stylequeue.cli.main import main
from stylequeue.shared.settings import Settings
from stylequeue.shared.states import utcnow
from tests.deletion_helpers import assert_nothing_left, everything, full_job
from tests.services import free_port

UNKNOWN = "00000000-0000-4000-8000-000000000000"


@pytest.fixture
def server(settings: Settings) -> Iterator[str]:
    from stylequeue.web import create_app

    http = make_server("127.0.0.1", 0, create_app(settings), threaded=True)
    thread = threading.Thread(target=http.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{http.server_port}"
    http.shutdown()
    thread.join(10)
    http.server_close()


def run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, ["delete", *args], env=env or {})
    return result.exit_code, result.stdout, result.stderr


def test_deletes_the_tokens_jobs_and_says_which(settings: Settings, server: str) -> None:
    done = full_job(settings, owner="api:alice", status="succeeded", finished_at=utcnow())
    queued = full_job(settings, owner="api:alice")
    code, out, err = run(done.id, queued.id, "--server", server, "--token", "alice-token")
    assert (code, err) == (0, "")
    assert out.splitlines() == [f"deleted {done.id}", f"deleted {queued.id}"]
    assert_nothing_left(settings, done.id)
    assert_nothing_left(settings, queued.id)


def test_the_token_and_server_come_from_the_environment(settings: Settings, server: str) -> None:
    job = full_job(settings, owner="api:bob", status="failed")
    env = {"STYLEQUEUE_SERVER": server, "STYLEQUEUE_API_TOKEN": "bob-token"}
    assert run(job.id, env=env) == (0, f"deleted {job.id}\n", "")
    assert_nothing_left(settings, job.id)


def test_someone_elses_or_no_such_job_is_an_error_and_the_rest_go_on(
    settings: Settings, server: str
) -> None:
    alices = full_job(settings, owner="api:alice", status="succeeded")
    bobs = full_job(settings, owner="api:bob", status="succeeded")
    before = [key for key in everything(settings) if alices.id in key]
    code, out, err = run(alices.id, UNKNOWN, "../../admin", bobs.id,
                         "--server", server, "--token", "bob-token")  # fmt: skip
    assert code == 1
    assert out == f"deleted {bobs.id}\n"
    assert err.splitlines() == [
        f"{alices.id}: not deleted: no such job for this token",
        f"{UNKNOWN}: not deleted: no such job for this token",
        "../../admin: not deleted: no such job for this token",
    ]
    assert [key for key in everything(settings) if alices.id in key] == before


def test_without_a_token_nothing_is_sent(settings: Settings) -> None:
    code, _, err = run(UNKNOWN, "--server", f"http://127.0.0.1:{free_port()}")
    assert code == 2 and "STYLEQUEUE_API_TOKEN" in err


def test_a_server_that_cannot_be_reached() -> None:
    result = CliRunner().invoke(
        delete, [UNKNOWN, "--server", f"http://127.0.0.1:{free_port()}", "--token", "t"]
    )
    assert result.exit_code == 1
    assert f"{UNKNOWN}: not deleted: cannot reach the server" in result.stderr
