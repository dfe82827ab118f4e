"""`stylequeue submit`'s client without a server: when it stops following a job, and where its
defaults come from. (tests/integration/test_submit_cli.py runs it against a live stack.)"""

from __future__ import annotations

from typing import Any

import pytest
import requests
from click.testing import CliRunner

from stylequeue.cli import submit as cli

BASE = "http://sq.test"
JOB = "11111111-2222-3333-4444-555555555555"


class _Response:
    def __init__(self, body: dict[str, Any]) -> None:
        self.status_code = 200
        self._body = body

    def json(self) -> dict[str, Any]:
        return self._body


class FakeServer(requests.Session):
    """Answers the job and progress URLs from a script of job states, one per progress poll.

    The last state is repeated; a client that has not stopped after ``limit`` requests is
    following forever, and the test fails instead of hanging.
    """

    def __init__(self, states: list[dict[str, Any]], limit: int = 40) -> None:
        super().__init__()
        self.states, self.limit, self.polls, self.requests = states, limit, 0, 0

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        self.requests += 1
        if self.requests > self.limit:
            raise AssertionError(f"still polling after {self.limit} requests")
        state = self.states[min(self.polls, len(self.states) - 1)]
        if url.endswith("/progress"):
            self.polls += 1
            entries = [{"id": f"{self.polls}-0", "iteration": self.polls, "loss": 1.0}]
            return _Response({"entries": entries, "last_id": f"{self.polls}-0",
                              "status": state["status"], "tiles": state.get("tiles")})  # fmt: skip
        return _Response({"id": JOB, **state})


def _state(status: str, terminal: bool, **extra: Any) -> dict[str, Any]:
    return {"status": status, "terminal": terminal, **extra}


def _follow(server: FakeServer, first: dict[str, Any]) -> dict[str, Any]:
    seen: list[str] = []
    job = cli.follow(
        server,
        BASE,
        {"id": JOB, **first},
        on_update=lambda j, _e: seen.append(j["status"]),
        sleep=lambda _s: None,
    )
    assert seen, "on_update was never called"
    return job


def test_follows_until_the_job_json_says_terminal() -> None:
    states = [_state("queued", False), _state("running", False), _state("running", False)]
    server = FakeServer([*states, _state("succeeded", True, best_loss=2.5)])
    job = _follow(server, _state("queued", False))
    assert (job["status"], job["terminal"], job["best_loss"]) == ("succeeded", True, 2.5)
    assert server.polls == 4


def test_a_terminal_state_this_client_has_never_heard_of_ends_the_wait() -> None:
    # The server decides what is terminal; the client keeps no list of status names.
    server = FakeServer([_state("running", False), _state("expired", True)])
    job = _follow(server, _state("queued", False))
    assert (job["status"], job["terminal"]) == ("expired", True)


def test_an_already_finished_job_is_read_once_and_returned() -> None:
    server = FakeServer([_state("failed", True, error="out of memory")])
    job = _follow(server, _state("failed", True))
    assert job["error"] == "out of memory"  # the full job JSON, fetched once
    assert server.polls == 1


def test_a_tiled_jobs_progress_within_its_iteration_reaches_the_update() -> None:
    tiles = {"iteration": 2, "phase": "step", "done": 5, "total": 16, "elapsed": 30.0}
    server = FakeServer([_state("running", False, tiles=tiles), _state("succeeded", True)])
    seen: list[Any] = []
    first = {"id": JOB, **_state("running", False)}
    cli.follow(server, BASE, first, on_update=lambda j, _e: seen.append(j.get("tiles")),
               sleep=lambda _s: None)  # fmt: skip
    assert seen[0] == tiles and seen[-1] is None


# ---- defaults from settings ------------------------------------------------------------------


def test_server_and_token_default_to_the_settings(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    seen: dict[str, Any] = {}

    def fake_create(
        session: requests.Session, base: str, *args: Any, **kwargs: Any
    ) -> dict[str, Any]:
        seen["base"], seen["auth"] = base, session.headers.get("Authorization")
        return {"id": JOB, "status": "queued"}

    monkeypatch.setattr(cli, "create_job", fake_create)
    (tmp_path / "c.png").write_bytes(b"x")
    args = [str(tmp_path / "c.png"), str(tmp_path / "c.png"), "--no-wait"]
    env = {"STYLEQUEUE_SERVER": "https://styles.example.org", "STYLEQUEUE_API_TOKEN": "t0k"}
    result = CliRunner().invoke(cli.submit, args, env=env)
    assert result.exit_code == 0, result.output
    assert seen == {"base": "https://styles.example.org", "auth": "Bearer t0k"}

    cleared = {"STYLEQUEUE_SERVER": None, "STYLEQUEUE_API_TOKEN": None}
    result = CliRunner().invoke(cli.submit, [*args, "--server", "http://x:1"], env=cleared)
    assert result.exit_code == 0, result.output
    assert seen == {"base": "http://x:1", "auth": None}
    result = CliRunner().invoke(cli.submit, args, env=cleared)
    assert seen["base"] == "http://127.0.0.1:8000"
