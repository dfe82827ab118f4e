"""Headers, caching and what public answers tell: issue 12, section 3.

Pages carry a Content-Security-Policy without inline script and refuse to be framed; private
JSON is never stored by a cache; bearer answers vary on Authorization; the public fleet and
readiness answers name no host, pid, address or bucket; numbers in the query string are ASCII
digits; static files live under one path, reachable with any Authorization header.
"""

from __future__ import annotations

import base64
import hashlib
import io
import re
from dataclasses import replace

import pytest
import redis
from flask.testing import FlaskClient
from werkzeug.datastructures import FileStorage, MultiDict
from werkzeug.test import encode_multipart

from stylequeue.shared.fleet import announce
from stylequeue.shared.settings import Settings, parse_admin_tokens
from stylequeue.web import create_app
from tests.services import free_port
from tests.web import images
from tests.web.helpers import ALICE, error_of, submit

ADMIN_TOKEN = "ops-token-0123456789"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
ARABIC_TEN = "\u0661\u0660"  # 10 in Arabic-Indic digits: Python's int() takes it
INLINE_SCRIPT = re.compile(r"<script(?![^>]*\bsrc=)([^>]*)>(.*?)</script>", re.S)


def script_hash(text: str) -> str:
    """The CSP source that allows an inline script of exactly ``text``."""
    return f"'sha256-{base64.b64encode(hashlib.sha256(text.encode()).digest()).decode()}'"


def csp_directives(header: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for part in header.split(";"):
        words = part.split()
        if words:
            out[words[0]] = words[1:]
    return out


# ---- pages: CSP, framing --------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/", "/jobs", "/fleet"])
def test_pages_have_a_strict_csp_and_refuse_framing(client: FlaskClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code in (200, 401)
    policy = csp_directives(response.headers["Content-Security-Policy"])
    assert policy["frame-ancestors"] == ["'none'"]
    assert policy["default-src"] == ["'none'"]
    assert policy["base-uri"] == ["'none'"] and policy["object-src"] == ["'none'"]
    assert "'unsafe-inline'" not in policy["script-src"]
    assert "'unsafe-eval'" not in policy["script-src"]
    assert "'unsafe-inline'" not in policy["style-src"]
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Cross-Origin-Opener-Policy"] == "same-origin"
    html = response.get_data(as_text=True)
    # every inline <script> is data (JSON config) or the import map allowed by its hash
    for attrs, body in INLINE_SCRIPT.findall(html):
        if 'type="application/json"' in attrs:
            continue
        assert 'type="importmap"' in attrs, attrs
        assert script_hash(body) in policy["script-src"]
    assert " style=" not in html  # inline styles would need 'unsafe-inline'


def test_json_and_images_allow_nothing(client: FlaskClient) -> None:
    job = submit(client).get_json()
    for url in ("/api/v1/config", job["links"]["self"], job["links"]["content"]):
        policy = csp_directives(client.get(url, headers=ALICE).headers["Content-Security-Policy"])
        assert policy["default-src"] == ["'none'"] and policy["frame-ancestors"] == ["'none'"]


def test_hsts_only_over_https(client: FlaskClient) -> None:
    assert "Strict-Transport-Security" not in client.get("/").headers
    secure = client.get("/", base_url="https://stylequeue.example")
    assert secure.headers["Strict-Transport-Security"].startswith("max-age=")


# ---- caching ----------------------------------------------------------------------------------


def test_private_json_is_never_stored(client: FlaskClient) -> None:
    job = submit(client).get_json()
    private = [
        job["links"]["self"],
        job["links"]["progress"],
        job["links"]["snapshots"],
        "/api/v1/jobs",
        "/api/v1/session",
    ]
    for url in private:
        response = client.get(url, headers=ALICE)
        assert response.status_code == 200, url
        assert set(response.cache_control) >= {"private", "no-store"}, (url, response.headers)
        assert "authorization" in {v.lower() for v in response.vary}, url
    browser = client.application.test_client()
    session = browser.get("/api/v1/session")
    assert session.get_json()["csrf_token"]
    assert {"private", "no-store"} <= set(session.cache_control)
    assert "Cookie" in session.vary


def test_bearer_answers_vary_on_authorization(client: FlaskClient) -> None:
    job = submit(client)
    assert "Authorization" in job.headers["Vary"]
    image = client.get(job.get_json()["links"]["content"], headers=ALICE)
    assert image.status_code == 200 and "Authorization" in image.headers["Vary"]
    assert image.cache_control.private  # the images keep their own (private) caching


# ---- what public answers tell -------------------------------------------------------------


@pytest.fixture
def admin_client(settings: Settings) -> FlaskClient:
    app = create_app(replace(settings, admin_tokens=parse_admin_tokens(f"ops={ADMIN_TOKEN}")))
    return app.test_client()


def test_public_fleet_names_no_host_or_pid(admin_client: FlaskClient, settings: Settings) -> None:
    assert admin_client.get("/api/v1/fleet").get_json() == {
        "online": False,
        "random_weights": False,
        "weights_unavailable": False,
    }
    r = redis.Redis.from_url(settings.redis_url)
    announce(r, "gpu-box-17.internal/4242", {"weights": "random", "weights_ok": True})
    announce(
        r,
        "gpu-box-18.internal/777",
        {"weights": "/srv/keras/vgg19.h5", "weights_ok": False, "weights_error": "no /srv/x"},
    )
    r.close()
    public = admin_client.get("/api/v1/fleet")
    assert public.get_json() == {
        "online": True,
        "random_weights": True,
        "weights_unavailable": True,
    }
    text = public.get_data(as_text=True)
    for secret in ("gpu-box", "4242", "777", "/srv"):
        assert secret not in text
    # the details are the operators' (the fleet view's own endpoint)
    detailed = admin_client.get("/api/v1/admin/fleet", headers=ADMIN).get_json()
    assert sorted(w["name"] for w in detailed["workers"]) == [
        "gpu-box-17.internal/4242",
        "gpu-box-18.internal/777",
    ]


def test_public_readyz_names_no_address(settings: Settings) -> None:
    port = free_port()
    dead = replace(
        settings,
        redis_url=f"redis://127.0.0.1:{port}/0",
        admin_tokens=parse_admin_tokens(f"ops={ADMIN_TOKEN}"),
    )
    client = create_app(dead).test_client()
    public = client.get("/readyz")
    assert public.status_code == 503
    body = public.get_json()
    assert body["checks"] == {"database": "ok", "redis": "error", "storage": "ok"}
    assert str(port) not in public.get_data(as_text=True)
    assert settings.var_dir not in public.get_data(as_text=True)
    detailed = client.get("/readyz", headers=ADMIN)
    assert detailed.status_code == 503
    assert str(port) in detailed.get_json()["checks"]["redis"]
    wrong = client.get("/readyz", headers={"Authorization": "Bearer nope"})
    assert wrong.get_json()["checks"]["redis"] == "error"  # a wrong token sees the public one


# ---- numbers in the query string: ASCII digits, 400 naming the parameter ----------------------


@pytest.mark.parametrize("value", ["²", ARABIC_TEN, "1_0", " 5", "+3", "0x10", "\u0663"])
@pytest.mark.parametrize("name", ["page", "per_page"])
def test_paging_numbers_are_ascii_digits(client: FlaskClient, name: str, value: str) -> None:
    response = client.get("/api/v1/jobs", query_string={name: value}, headers=ALICE)
    assert response.status_code == 400, response.get_data(as_text=True)[:300]
    assert error_of(response)["field"] == name


@pytest.mark.parametrize("value", ["²", ARABIC_TEN, "1_0"])
def test_progress_limit_is_ascii_digits(client: FlaskClient, value: str) -> None:
    job = submit(client).get_json()
    response = client.get(job["links"]["progress"], query_string={"limit": value}, headers=ALICE)
    assert response.status_code == 400
    assert error_of(response)["field"] == "limit"


@pytest.mark.parametrize("value", ["²", ARABIC_TEN])
def test_jobs_page_takes_the_default_for_a_bad_number(client: FlaskClient, value: str) -> None:
    assert client.get("/jobs", query_string={"page": value}).status_code == 200


@pytest.mark.parametrize("value", [ARABIC_TEN, "²", "1_0"])
def test_form_numbers_are_ascii_digits(client: FlaskClient, value: str) -> None:
    response = submit(client, fields={"iterations": value, "max_size": "64"})
    assert response.status_code == 422
    assert error_of(response)["field"] == "iterations"


# ---- smaller findings -----------------------------------------------------------------------


def test_static_files_are_served_under_one_path_only(client: FlaskClient) -> None:
    for path, status in (("/assets/css/app.css", 200), ("/static/css/app.css", 404)):
        with client.get(path) as response:
            assert response.status_code == status, path


def test_a_bad_bearer_token_still_gets_the_stylesheet(client: FlaskClient) -> None:
    bad = {"Authorization": "Bearer not-a-token"}
    with client.get("/assets/css/app.css", headers=bad) as response:
        assert response.status_code == 200
    assert client.get("/api/v1/jobs", headers=bad).status_code == 401


def test_a_form_of_too_many_parts_says_so(client: FlaskClient) -> None:
    data = MultiDict([(f"x{i}", "1") for i in range(1500)])
    data.add("content", FileStorage(io.BytesIO(images.png()), "c.png"))
    boundary, body = encode_multipart(data)
    assert len(body) < client.application.config["MAX_CONTENT_LENGTH"]
    response = client.post(
        "/api/v1/jobs",
        data=body,
        headers=ALICE,
        content_type=f"multipart/form-data; boundary={boundary}",
    )
    assert response.status_code == 413
    error = error_of(response)
    assert error["code"] == "too_many_parts"
    assert "at most 200 parts" in error["message"]
    assert "bytes in all" not in error["message"]
