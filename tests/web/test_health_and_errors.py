"""Probes, and errors that are JSON under /api whatever raised them."""

from __future__ import annotations

from dataclasses import replace

import redis
from flask import Flask

from stylequeue.shared.fleet import announce
from stylequeue.shared.settings import Settings
from stylequeue.web import create_app
from tests.services import free_port
from tests.web.helpers import ALICE, error_of


def test_healthz(client) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200 and response.get_json() == {"status": "ok"}


def test_readyz_ok(client) -> None:
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.get_json()["checks"] == {"database": "ok", "redis": "ok", "storage": "ok"}


def test_readyz_names_what_failed(settings: Settings) -> None:
    dead_redis = replace(settings, redis_url=f"redis://127.0.0.1:{free_port()}/0")
    client = create_app(dead_redis).test_client()
    assert client.get("/healthz").status_code == 200  # alive, just not ready
    response = client.get("/readyz")
    assert response.status_code == 503
    body = response.get_json()
    assert body["checks"]["database"] == "ok" and body["checks"]["storage"] == "ok"
    assert body["checks"]["redis"] == "error"  # why: in the log, and for operators only
    assert body["error"]["code"] == "not_ready" and "redis" in body["error"]["message"]


def test_readyz_with_a_dead_database(settings: Settings) -> None:
    dead_db = f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/nope"
    client = create_app(replace(settings, database_url=dead_db)).test_client()
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.get_json()["checks"]["database"] == "error"


def test_dead_database_is_503_not_500(settings: Settings) -> None:
    dead_db = f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/nope"
    client = create_app(replace(settings, database_url=dead_db)).test_client()
    for method, url in [("GET", "/api/v1/jobs"), ("POST", "/api/v1/jobs")]:
        response = client.open(
            url,
            method=method,
            headers=ALICE,
            data={"iterations": "5"},
            content_type="multipart/form-data",
        )
        assert response.status_code == 503, (method, url, response.status_code)
        assert error_of(response)["code"] == "database_unavailable"


def test_unknown_route_and_method_are_json(client) -> None:
    missing = client.get("/api/v1/nothing-here")
    assert missing.status_code == 404 and error_of(missing)["code"] == "not_found"
    wrong = client.delete("/api/v1/jobs", headers=ALICE)
    assert wrong.status_code == 405 and error_of(wrong)["code"] == "method_not_allowed"
    assert "POST" in wrong.headers["Allow"]
    assert client.get("/no-such-page").status_code == 404  # HTML pages keep HTML errors


def test_unexpected_errors_are_json_500(app: Flask) -> None:
    def boom() -> str:
        raise RuntimeError("kaput")

    # outside /api/v1: a route there would have to be in the OpenAPI document (test_openapi.py)
    app.add_url_rule("/api/boom", "boom", boom)
    response = app.test_client().get("/api/boom")
    assert response.status_code == 500
    assert error_of(response) == {
        "code": "internal_error",
        "message": "something went wrong on our side",
    }


def test_fleet(client, settings: Settings) -> None:
    assert client.get("/api/v1/fleet").get_json() == {
        "online": False,
        "random_weights": False,
        "weights_unavailable": False,
    }
    r = redis.Redis.from_url(settings.redis_url)
    announce(r, "gpu-0", {"weights": "imagenet", "weights_ok": True})
    body = client.get("/api/v1/fleet").get_json()
    assert body["online"] is True and body["random_weights"] is False
    announce(r, "cpu-1", {"weights": "random", "weights_ok": True})
    assert client.get("/api/v1/fleet").get_json()["random_weights"] is True
    announce(r, "gpu-2", {"weights": "imagenet", "weights_ok": False, "weights_error": "offline"})
    body = client.get("/api/v1/fleet").get_json()
    assert body["weights_unavailable"] is True and "offline" not in str(body)


def test_fleet_without_redis(settings: Settings) -> None:
    client = create_app(replace(settings, redis_url=f"redis://127.0.0.1:{free_port()}/0"))
    response = client.test_client().get("/api/v1/fleet")
    assert response.status_code == 503 and response.is_json


def test_missing_secret_key_warns_and_still_works(settings: Settings, caplog) -> None:
    app = create_app(replace(settings, secret_key=""))
    assert "STYLEQUEUE_SECRET_KEY" in caplog.text
    assert len(app.config["SECRET_KEY"]) >= 32
    assert app.test_client().get("/api/v1/session").get_json()["csrf_token"]
