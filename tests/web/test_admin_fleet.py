"""The operators' fleet: ``GET /api/v1/admin/fleet`` and the ``/fleet`` page's sign-in.

Admin tokens are separate from API tokens; the browser signs in once and its signed session
cookie keeps a fingerprint of the token, never the token.
"""

from __future__ import annotations

import base64
import re
import zlib
from dataclasses import replace

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient

from stylequeue.shared import fleet
from stylequeue.shared.settings import Settings, parse_admin_tokens
from stylequeue.web import auth, create_app
from tests.web.helpers import ALICE, error_of

ADMIN_TOKEN = "ops-token-0123456789"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
URL = "/api/v1/admin/fleet"


@pytest.fixture
def admin_settings(settings: Settings) -> Settings:
    return replace(settings, admin_tokens=parse_admin_tokens(f"ops={ADMIN_TOKEN}"))


@pytest.fixture
def admin_app(admin_settings: Settings) -> Flask:
    return create_app(admin_settings)


@pytest.fixture
def web(admin_app: Flask) -> FlaskClient:
    return admin_app.test_client()


def _announce(settings: Settings) -> None:
    client = redis.Redis.from_url(settings.redis_url)
    info = {
        "weights": "random", "weights_ok": True, "precision": "float32", "pid": 9,
        "host": "box-7", "device": "CPU", "memory": {"kind": "rss", "used_bytes": 5},
    }  # fmt: skip
    fleet.announce(client, "w1@box-7", info)
    client.close()


def _csrf(page_html: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', page_html)
    assert found, page_html
    return found.group(1)


def _sign_in(web: FlaskClient, token: str = ADMIN_TOKEN) -> int:
    page = web.get("/fleet")
    csrf = _csrf(page.get_data(as_text=True))
    return web.post("/fleet/sign-in", data={"token": token, "csrf_token": csrf}).status_code


def test_a_bearer_admin_token_reads_the_fleet(web: FlaskClient, admin_settings: Settings) -> None:
    _announce(admin_settings)
    response = web.get(URL, headers=ADMIN)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.headers["Cache-Control"] == "no-store"
    body = response.get_json()
    assert [w["name"] for w in body["workers"]] == ["w1@box-7"]
    assert body["workers"][0]["host"] == "box-7" and body["workers"][0]["device"] == "CPU"
    assert set(body) >= {"queue", "running", "last_hour", "generated_at"}


@pytest.mark.parametrize(
    ("headers", "status", "code"),
    [
        ({}, 401, "unauthorized"),  # anonymous (a cookie session that never signed in)
        ({"Authorization": "Bearer nope"}, 401, "unauthorized"),
        ({"Authorization": f"Basic {ADMIN_TOKEN}"}, 401, "unauthorized"),
        (ALICE, 403, "forbidden"),  # a job owner's API token is not an operator's
    ],
)
def test_everyone_else_is_refused(
    web: FlaskClient, headers: dict[str, str], status: int, code: str
) -> None:
    web.get("/api/v1/session")  # a browser session with an owner id: still nobody here
    response = web.get(URL, headers=headers)
    assert response.status_code == status
    assert error_of(response)["code"] == code


def test_no_admin_tokens_configured_means_closed(client: FlaskClient) -> None:
    # the plain `settings` fixture has API tokens only
    assert client.get(URL).status_code == 401
    assert client.get(URL, headers={"Authorization": "Bearer alice-token"}).status_code == 403
    assert client.get("/fleet").status_code == 401


def test_the_page_asks_anonymous_visitors_to_sign_in_and_shows_nothing(
    web: FlaskClient, admin_settings: Settings
) -> None:
    _announce(admin_settings)
    page = web.get("/fleet")
    html = page.get_data(as_text=True)
    assert page.status_code == 401 and "Admin token" in html
    assert "w1@box-7" not in html and "box-7" not in html and "fleet.js" not in html
    assert page.headers["Cache-Control"] == "no-store"


def test_sign_in_keeps_no_token_in_the_cookie_and_opens_the_api(
    web: FlaskClient, admin_settings: Settings
) -> None:
    assert _sign_in(web, "wrong-token") == 401
    assert web.get(URL).status_code == 401
    assert _sign_in(web) == 303
    assert web.get(URL).status_code == 200
    page = web.get("/fleet")
    assert page.status_code == 200 and "fleet.js" in page.get_data(as_text=True)
    cookie = web.get_cookie("stylequeue_session")
    assert cookie is not None
    assert ADMIN_TOKEN not in _decoded(cookie.value)
    assert "ops" in _decoded(cookie.value)  # the sign-in is there, by name


def _decoded(cookie: str) -> str:
    """The payload of Flask's signed (not encrypted) session cookie: ``payload.time.sig``,
    zlib-compressed when it starts with a dot."""
    compressed = cookie.startswith(".")
    payload = cookie.lstrip(".").split(".")[0]
    raw = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    return (zlib.decompress(raw) if compressed else raw).decode()


def test_sign_in_needs_the_csrf_token(web: FlaskClient) -> None:
    web.get("/fleet")
    response = web.post("/fleet/sign-in", data={"token": ADMIN_TOKEN})
    assert response.status_code == 403
    assert web.get(URL).status_code == 401


def test_sign_out_and_revoked_tokens_end_the_sign_in(
    web: FlaskClient, admin_settings: Settings
) -> None:
    assert _sign_in(web) == 303
    assert web.get(URL).status_code == 200
    # the same browser against an app whose settings no longer list that token
    revoked = create_app(replace(admin_settings, admin_tokens=parse_admin_tokens("ops=other")))
    other = revoked.test_client()
    cookie = web.get_cookie("stylequeue_session")
    assert cookie is not None
    other.set_cookie("stylequeue_session", cookie.value)
    assert other.get(URL).status_code == 401
    # signing out
    csrf = _csrf(web.get("/fleet").get_data(as_text=True))
    assert web.post("/fleet/sign-out", data={"csrf_token": csrf}).status_code == 303
    assert web.get(URL).status_code == 401


def test_a_sign_in_expires(web: FlaskClient) -> None:
    assert _sign_in(web) == 303
    with web.session_transaction() as session:
        signed_in = dict(session[auth.ADMIN_KEY])
        signed_in["since"] -= auth.ADMIN_SESSION_SECONDS + 1
        session[auth.ADMIN_KEY] = signed_in  # reassigned: the session saves only when set
    assert web.get(URL).status_code == 401
    assert web.get("/fleet").status_code == 401


def test_every_admin_route_is_operators_only(admin_app: Flask) -> None:
    admin_rules = [r for r in admin_app.url_map.iter_rules() if "/admin/" in r.rule]
    assert admin_rules
    for rule in admin_rules:
        view = admin_app.view_functions[rule.endpoint]
        assert getattr(view, auth.ADMIN_VIEW_FLAG, False), rule.rule


def test_the_public_fleet_shows_only_what_the_banners_need(
    web: FlaskClient, admin_settings: Settings
) -> None:
    _announce(admin_settings)
    body = web.get("/api/v1/fleet").get_json()
    assert body == {"online": True, "random_weights": True, "weights_unavailable": False}


def test_admin_and_api_tokens_must_differ() -> None:
    from stylequeue.shared.settings import SettingsError, load_settings

    with pytest.raises(SettingsError, match="share a token"):
        load_settings({"STYLEQUEUE_API_TOKENS": "a=same", "STYLEQUEUE_ADMIN_TOKENS": "b=same"})
    tokens = load_settings({"STYLEQUEUE_ADMIN_TOKENS": "ops=t1,t2"}).admin_tokens
    assert tokens["t1"] == "admin:ops" and tokens["t2"].startswith("admin:")


def test_the_metrics_token_opens_the_fleet_too(settings: Settings) -> None:
    """Who may scrape the fleet's numbers may see the fleet (STYLEQUEUE_METRICS_TOKEN)."""
    from dataclasses import replace

    app = create_app(replace(settings, metrics_token="scrape-token"))
    client = app.test_client()
    assert client.get(URL, headers={"Authorization": "Bearer scrape-token"}).status_code == 200
    assert client.get(URL, headers={"Authorization": "Bearer other"}).status_code == 401
