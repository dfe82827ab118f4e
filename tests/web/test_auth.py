"""Owners: browser sessions and bearer tokens; others' jobs are 404; CSRF on cookie writes."""

from __future__ import annotations

import io

import pytest
from flask import Flask

from stylequeue.shared import keys
from stylequeue.shared.settings import Settings
from stylequeue.shared.storage import Storage
from tests.web import images
from tests.web.helpers import ALICE, BOB, SMALL, count_jobs, error_of, submit, update_job


def job_endpoints(job_id: str) -> list[tuple[str, str]]:
    base = f"/api/v1/jobs/{job_id}"
    return [
        ("GET", base),
        ("GET", f"{base}/progress"),
        ("GET", f"{base}/result"),
        ("GET", f"{base}/result?download=1"),
        ("GET", f"{base}/snapshots"),
        ("GET", f"{base}/snapshots/10"),
        ("GET", f"{base}/inputs/content"),
        ("GET", f"{base}/inputs/style/0"),
        ("POST", f"{base}/cancel"),
    ]


def multipart(csrf: str | None = None, **extra: str) -> dict[str, object]:
    data: dict[str, object] = {
        **SMALL,
        **extra,
        "content": (io.BytesIO(images.png()), "c.png"),
        "style": (io.BytesIO(images.png()), "s.png"),
    }
    if csrf is not None:
        data["csrf_token"] = csrf
    return data


@pytest.fixture
def alices_finished_job(client, settings: Settings, storage: Storage) -> str:
    """A job of Alice's with a result and a snapshot, so every endpoint would answer 200."""
    job_id = submit(client).get_json()["id"]
    storage.put(keys.result_key(job_id, attempt=0), images.png(), "image/png")
    storage.put(keys.snapshot_key(job_id, 10, attempt=0), images.png(), "image/png")
    update_job(
        settings,
        job_id,
        status="running",
        result_key=keys.result_key(job_id, attempt=0),
        snapshot_iterations=[10],
    )
    return job_id


def test_owner_sees_every_endpoint(client, alices_finished_job: str) -> None:
    # Every read answers 200; the cancel of a running job is accepted (202: the worker stops
    # it at its next iteration).
    expected = {"GET": 200, "POST": 202}
    for method, url in job_endpoints(alices_finished_job):
        response = client.open(url, method=method, headers=ALICE)
        assert response.status_code == expected[method], (method, url, response.status_code)


def test_other_owners_get_404_everywhere(
    app: Flask, client, alices_finished_job: str, settings: Settings
) -> None:
    browser = app.test_client()
    csrf = browser.get("/api/v1/session").get_json()["csrf_token"]
    callers = {
        "bob": BOB,
        "browser": {"X-CSRF-Token": csrf},
    }
    for who, headers in callers.items():
        for method, url in job_endpoints(alices_finished_job):
            response = browser.open(url, method=method, headers=headers)
            assert response.status_code == 404, (who, method, url, response.status_code)
            assert error_of(response)["code"] == "job_not_found"
        listing = browser.get("/api/v1/jobs", headers=headers).get_json()
        assert listing["jobs"] == [] and listing["total"] == 0
    # A browser that has never had a session sees nothing either.
    fresh = app.test_client()
    assert fresh.get(f"/api/v1/jobs/{alices_finished_job}").status_code == 404
    # Bob's cancel attempt changed nothing.
    assert (
        client.get(f"/api/v1/jobs/{alices_finished_job}", headers=ALICE).get_json()[
            "cancel_requested"
        ]
        is False
    )


def test_missing_and_malformed_ids_are_404(client) -> None:
    for job_id in ("9b2d6c4e-0000-4000-8000-000000000000", "not-a-uuid", "1", "..%2F..%2Fetc"):
        for method, url in job_endpoints(job_id):
            response = client.open(url, method=method, headers=ALICE)
            assert response.status_code == 404, (method, url)
            assert response.is_json


@pytest.mark.parametrize(
    "header", ["Bearer nope", "Bearer ", "Basic YWxpY2U6eA==", "alice-token", "Bearer alice-token2"]
)
def test_bad_authorization_is_401(client, header: str) -> None:
    for method, url in [
        ("GET", "/api/v1/jobs"),
        ("GET", "/api/v1/session"),
        ("POST", "/api/v1/jobs"),
    ]:
        response = client.open(url, method=method, headers={"Authorization": header})
        assert response.status_code == 401, (header, url)
        assert error_of(response)["code"] == "unauthorized"
        assert response.headers["WWW-Authenticate"] == "Bearer"


def test_session_endpoint(app: Flask) -> None:
    browser = app.test_client()
    first = browser.get("/api/v1/session").get_json()
    assert first["auth"] == "session"
    assert first["owner"].startswith("web:") and len(first["owner"]) == 4 + 32
    assert len(first["csrf_token"]) >= 32
    assert browser.get("/api/v1/session").get_json() == first  # stable within the session
    other = app.test_client().get("/api/v1/session").get_json()
    assert other["owner"] != first["owner"] and other["csrf_token"] != first["csrf_token"]
    token = browser.get("/api/v1/session", headers=ALICE).get_json()
    assert token == {"owner": "api:alice", "auth": "token", "csrf_token": None}


def test_get_without_session_sets_no_cookie(app: Flask) -> None:
    browser = app.test_client()
    for url in ("/api/v1/jobs", "/api/v1/config", "/healthz"):
        response = browser.get(url)
        assert response.status_code == 200
        assert "Set-Cookie" not in response.headers, url
    assert "Set-Cookie" in browser.get("/api/v1/session").headers


def test_cookie_post_needs_csrf(app: Flask, settings: Settings, storage: Storage) -> None:
    browser = app.test_client()
    token = browser.get("/api/v1/session").get_json()["csrf_token"]

    missing = browser.post("/api/v1/jobs", data=multipart())
    assert missing.status_code == 403
    assert error_of(missing)["code"] == "csrf_failed"
    wrong = browser.post("/api/v1/jobs", data=multipart(), headers={"X-CSRF-Token": "x" * 43})
    assert wrong.status_code == 403
    stolen = app.test_client()  # another session presenting this one's token
    stolen.get("/api/v1/session")
    assert stolen.post("/api/v1/jobs", data=multipart(token)).status_code == 403
    assert count_jobs(settings) == 0 and storage.list("jobs/") == []

    by_header = browser.post("/api/v1/jobs", data=multipart(), headers={"X-CSRF-Token": token})
    assert by_header.status_code == 201, by_header.get_json()
    by_field = browser.post("/api/v1/jobs", data=multipart(token))
    assert by_field.status_code == 201, by_field.get_json()

    listing = browser.get("/api/v1/jobs").get_json()
    assert {j["id"] for j in listing["jobs"]} == {
        by_header.get_json()["id"],
        by_field.get_json()["id"],
    }
    cancel_url = by_header.get_json()["links"]["cancel"]
    assert browser.post(cancel_url).status_code == 403
    assert browser.post(cancel_url, headers={"X-CSRF-Token": token}).status_code == 202


def test_cookie_post_without_any_session_is_403(app: Flask, settings: Settings) -> None:
    response = app.test_client().post("/api/v1/jobs", data=multipart())
    assert response.status_code == 403
    assert count_jobs(settings) == 0


def test_bearer_posts_need_no_csrf(client) -> None:
    response = submit(client, ALICE)
    assert response.status_code == 201
    assert client.post(response.get_json()["links"]["cancel"], headers=ALICE).status_code == 202


def test_index_page_carries_the_csrf_token(app: Flask) -> None:
    browser = app.test_client()
    page = browser.get("/")
    assert page.status_code == 200 and page.mimetype == "text/html"
    token = browser.get("/api/v1/session").get_json()["csrf_token"]
    assert token in page.get_data(as_text=True)  # for the pages' fetch calls


@pytest.mark.parametrize("secure", [False, True])
def test_session_cookie_secure_follows_settings(settings: Settings, secure: bool) -> None:
    from dataclasses import replace

    from stylequeue.web import create_app

    browser = create_app(replace(settings, cookie_secure=secure)).test_client()
    cookie = browser.get("/api/v1/session").headers["Set-Cookie"]
    assert ("; Secure" in cookie) is secure
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
