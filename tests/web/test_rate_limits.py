"""Rate limits per client address (Flask-Limiter on the service's real Redis), and the client
address itself: from ProxyFix's configured hops, never from a header anyone can set."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient

from stylequeue.shared.redis_keys import RATE_LIMIT_PREFIX
from stylequeue.shared.settings import Settings, load_settings, parse_admin_tokens
from stylequeue.web import create_app
from tests.web.helpers import ALICE, count_jobs, error_of, submit

BAD = {"Authorization": "Bearer not-a-real-token"}


def app_with(settings: Settings, **overrides: Any) -> Flask:
    return create_app(replace(settings, **overrides))


def at(app: Flask, address: str) -> FlaskClient:
    client = app.test_client()
    client.environ_base["REMOTE_ADDR"] = address
    return client


def assert_rate_limited(response: Any) -> None:
    assert response.status_code == 429, response.get_data(as_text=True)[:300]
    assert error_of(response)["code"] == "rate_limited"
    assert 0 < int(response.headers["Retry-After"]) <= 60


# ---- submissions --------------------------------------------------------------------------


def test_submissions_per_address_are_limited_in_redis(settings: Settings) -> None:
    app = app_with(settings, submit_rate_limit="2/minute")
    client = at(app, "203.0.113.5")
    assert [submit(client).status_code for _ in range(2)] == [201, 201]
    assert_rate_limited(submit(client))
    assert count_jobs(settings) == 2
    # counted in Redis, under our prefix: another app (another web process) sees the count
    stored = redis.Redis.from_url(settings.redis_url).keys(f"{RATE_LIMIT_PREFIX}:*")
    assert stored
    assert_rate_limited(submit(at(app_with(settings, submit_rate_limit="2/minute"), "203.0.113.5")))
    # another address has its own window; other requests are not submissions
    assert submit(at(app, "203.0.113.6")).status_code == 201
    assert client.get("/api/v1/jobs", headers=ALICE).status_code == 200


def test_off_means_no_submission_limit(settings: Settings) -> None:
    off = load_settings({"STYLEQUEUE_SUBMIT_RATE_LIMIT": "off"}).submit_rate_limit
    client = at(app_with(settings, submit_rate_limit=off), "203.0.113.5")
    assert [submit(client).status_code for _ in range(3)] == [201, 201, 201]


# ---- refused credentials --------------------------------------------------------------------


def test_refused_tokens_lock_the_address_out_of_credentials(settings: Settings) -> None:
    app = app_with(settings, auth_failure_rate_limit="3/minute")
    client = at(app, "198.51.100.20")
    assert [client.get("/api/v1/jobs", headers=BAD).status_code for _ in range(3)] == [401] * 3
    assert_rate_limited(client.get("/api/v1/jobs", headers=BAD))
    # even the right token, from this address, until the window frees: guessing stays slow
    assert_rate_limited(client.get("/api/v1/jobs", headers=ALICE))
    # the address's anonymous pages still work; other addresses are not affected
    assert client.get("/").status_code == 200
    assert at(app, "198.51.100.21").get("/api/v1/jobs", headers=ALICE).status_code == 200


def test_good_tokens_do_not_count(settings: Settings) -> None:
    client = at(app_with(settings, auth_failure_rate_limit="2/minute"), "198.51.100.30")
    assert all(client.get("/api/v1/jobs", headers=ALICE).status_code == 200 for _ in range(5))


def test_wrong_operator_sign_ins_count(settings: Settings) -> None:
    app = app_with(
        settings,
        auth_failure_rate_limit="2/minute",
        admin_tokens=parse_admin_tokens("ops=ops-token-0123456789"),
    )
    client = at(app, "198.51.100.40")
    csrf = client.get("/api/v1/session").get_json()["csrf_token"]
    for _ in range(2):
        wrong = client.post("/fleet/sign-in", data={"token": "guess", "csrf_token": csrf})
        assert wrong.status_code == 401
    locked = client.post("/fleet/sign-in", data={"token": "guess", "csrf_token": csrf})
    assert locked.status_code == 429 and int(locked.headers["Retry-After"]) > 0


def test_a_wrong_metrics_token_counts(settings: Settings) -> None:
    client = at(
        app_with(settings, auth_failure_rate_limit="2/minute", metrics_token="scrape-1234"),
        "198.51.100.50",
    )
    wrong = {"Authorization": "Bearer nope"}
    assert [client.get("/metrics", headers=wrong).status_code for _ in range(2)] == [403, 403]
    assert client.get("/metrics", headers=wrong).status_code == 429


# ---- the client address: configured proxy hops only -------------------------------------------


def test_forwarded_for_is_ignored_without_trusted_proxies(settings: Settings) -> None:
    """A client cannot dodge its limit by sending X-Forwarded-For itself."""
    client = at(app_with(settings, submit_rate_limit="1/minute"), "192.0.2.1")
    assert submit(client, {**ALICE, "X-Forwarded-For": "10.0.0.1"}).status_code == 201
    assert_rate_limited(submit(client, {**ALICE, "X-Forwarded-For": "10.0.0.2"}))


@pytest.mark.parametrize("hops", [1, 2])
def test_trusted_proxies_give_the_client_address(settings: Settings, hops: int) -> None:
    app = app_with(settings, submit_rate_limit="1/minute", trusted_proxies=hops)
    proxy = at(app, "127.0.0.1")
    # what the client sent, then what each trusted proxy appended
    chain = lambda client: ", ".join(["6.6.6.6", client, *["172.18.0.2"] * (hops - 1)])  # noqa: E731
    assert submit(proxy, {**ALICE, "X-Forwarded-For": chain("203.0.113.9")}).status_code == 201
    # same client, whatever it claims in front: limited
    assert_rate_limited(submit(proxy, {**ALICE, "X-Forwarded-For": chain("203.0.113.9")}))
    # another client behind the same proxy: its own window
    assert submit(proxy, {**ALICE, "X-Forwarded-For": chain("203.0.113.10")}).status_code == 201


def test_trusted_proxy_scheme_makes_https_urls(settings: Settings) -> None:
    app = app_with(settings, trusted_proxies=1)
    response = submit(at(app, "127.0.0.1"), {**ALICE, "X-Forwarded-Proto": "https"})
    assert response.status_code == 201
    assert response.headers["Strict-Transport-Security"]
    plain = submit(at(app_with(settings), "127.0.0.1"), {**ALICE, "X-Forwarded-Proto": "https"})
    assert "Strict-Transport-Security" not in plain.headers
