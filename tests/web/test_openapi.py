"""The OpenAPI document: valid, served, covering exactly the app's /api/v1 routes, and made
from the parameter table (no second copy of a range). Every response of the other web
tests is checked against it (tests/openapi_contract.py); the last tests here show that
check catching a contradiction."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from flask import Flask, jsonify
from openapi_spec_validator import validate

from stylequeue.shared.params import PARAMETERS, PUBLIC_PARAMETERS, JobOptions, ParamError
from stylequeue.shared.settings import Settings
from stylequeue.web import create_app, job_json, openapi, openapi_operations
from stylequeue.web.job_schema import JOB_SCHEMA
from stylequeue.web.openapi import Undocumented, openapi_document
from tests.openapi_contract import ContractViolation
from tests.web.helpers import ALICE, submit, with_settings

ROOT = Path(__file__).resolve().parents[2]
DOCUMENT = "/api/v1/openapi.json"


def _document(client) -> dict:
    response = client.get(DOCUMENT)
    assert response.status_code == 200
    return response.get_json()


def test_the_document_is_valid_openapi_3_1_and_public(client) -> None:
    document = _document(client)
    assert document["openapi"].startswith("3.1")
    validate(document)  # openapi-spec-validator
    # the contract is public: even a caller whose token is wrong may read it
    assert client.get(DOCUMENT, headers={"Authorization": "Bearer nope"}).status_code == 200


def _routes(app: Flask) -> set[tuple[str, str]]:
    """(METHOD, /path/{arg}) for each /api/v1 rule, read off the URL map by this test."""
    found = set()
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/api/v1/"):
            continue
        path = re.sub(r"<(?:[^:>]+:)?([^>]+)>", r"{\1}", rule.rule)
        found |= {(m, path) for m in rule.methods or () if m not in ("HEAD", "OPTIONS")}
    return found


def test_it_covers_exactly_the_apps_api_routes(app: Flask, client) -> None:
    document = _document(client)
    documented = {(m.upper(), p) for p, ops in document["paths"].items() for m in ops}
    assert documented == _routes(app)
    assert len(documented) >= 15  # today's views; a new one is added, never lost


def test_a_route_without_its_entry_stops_the_build(settings: Settings) -> None:
    app = create_app(settings)
    app.add_url_rule("/api/v1/shiny", "api.shiny", lambda: jsonify({}))
    with pytest.raises(Undocumented, match="/api/v1/shiny"):
        openapi_document(app, settings.limits)


def test_an_entry_without_its_route_stops_the_build(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    extra = {**openapi_operations.OPERATIONS, "api.gone": {"summary": "x", "responses": {}}}
    monkeypatch.setattr(openapi, "OPERATIONS", extra)
    with pytest.raises(Undocumented, match=r"api\.gone"):
        openapi_document(create_app(settings), settings.limits)


def test_the_submit_fields_are_the_parameter_table_with_this_servers_caps(
    settings: Settings,
) -> None:
    small = with_settings(settings, max_iterations=77, max_size=99, max_styles=2)
    client = create_app(small).test_client()
    document = _document(client)
    form = document["components"]["schemas"]["JobSubmission"]["properties"]
    assert set(form) == {*PUBLIC_PARAMETERS, "content", "style", "csrf_token"}
    config = client.get("/api/v1/config").get_json()["parameters"]  # what the form mirrors
    for name in PUBLIC_PARAMETERS:
        param = PARAMETERS[name]
        if param.kind not in ("int", "float"):
            continue
        number = next(s for s in form[name]["anyOf"] if "type" in s)
        assert number["minimum"] == param.low == config[name]["min"], name
        assert number["maximum"] == param.high_within(small.limits) == config[name]["max"], name
    assert form["iterations"]["anyOf"][0]["maximum"] == 77  # the server's cap, not 10**7
    assert form["max_size"]["anyOf"][0]["maximum"] == 99
    assert form["style"]["maxItems"] == 2
    assert form["init"]["enum"] == ["", *PARAMETERS["init"].choices]


def test_the_security_follows_the_views(client) -> None:
    paths = _document(client)["paths"]
    assert paths["/api/v1/jobs"]["post"]["security"] == [
        {"bearerToken": []},
        {"sessionCookie": [], "csrfHeader": []},
    ]
    assert {} in paths["/api/v1/jobs/{job_id}"]["get"]["security"]  # anonymous: owns nothing
    assert paths["/api/v1/admin/fleet"]["get"]["security"] == [
        {"adminToken": []},
        {"sessionCookie": []},
    ]
    assert paths[DOCUMENT]["get"]["security"] == []


def test_the_job_schema_names_every_key_of_the_job_json(client) -> None:
    job = submit(client).get_json()
    assert set(job) == set(JOB_SCHEMA["properties"]) == set(JOB_SCHEMA["required"])


@pytest.mark.parametrize(
    ("after", "accepted"),
    [("1-0", True), ("9999999999999999999-9999999999999999999", True),
     ("18446744073709551615-0", False), ("1-", False), ("", True)],
)  # fmt: skip
def test_the_documented_after_pattern_is_the_one_the_view_applies(
    client, after: str, accepted: bool
) -> None:
    job_id = submit(client).get_json()["id"]
    document = _document(client)
    parameter = next(
        p
        for p in document["paths"]["/api/v1/jobs/{job_id}/progress"]["get"]["parameters"]
        if p["name"] == "after"
    )
    documented = after == "" or re.search(parameter["schema"]["pattern"], after) is not None
    assert documented == accepted  # "" is allowEmptyValue: absent
    response = client.get(f"/api/v1/jobs/{job_id}/progress?after={after}", headers=ALICE)
    assert (response.status_code == 200) == accepted, response.get_json()


def test_the_contract_check_catches_an_undocumented_key(
    client, monkeypatch: pytest.MonkeyPatch
) -> None:
    job_id = submit(client).get_json()["id"]
    original = job_json.job_json
    monkeypatch.setattr("stylequeue.web.api.job_json", lambda job: {**original(job), "surprise": 1})
    with pytest.raises(ContractViolation, match="surprise"):
        client.get(f"/api/v1/jobs/{job_id}", headers=ALICE)


def test_the_contract_check_catches_an_undocumented_status(
    app: Flask, client, monkeypatch: pytest.MonkeyPatch
) -> None:
    from stylequeue.web.errors import ApiError

    def teapot() -> None:
        raise ApiError(418, "teapot", "short and stout")

    monkeypatch.setattr("stylequeue.web.base.get_owned_job", lambda *a, **k: teapot())
    with pytest.raises(ContractViolation, match="418"):
        client.get("/api/v1/jobs/00000000-0000-0000-0000-000000000000", headers=ALICE)


def test_the_readme_points_to_the_document() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## The API (v1)", 1)[1].split("\n## ", 1)[0]
    assert DOCUMENT in section
    assert "| `POST /api/v1/jobs` |" not in section  # the table is gone: one source


def test_the_live_server_check_catches_an_undocumented_key(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The integration tests' check (requests against a live server) works alike."""
    import requests

    from tests.openapi_contract import RequestsContract
    from tests.web.live import serve

    app = create_app(settings)
    job_id = submit(app.test_client()).get_json()["id"]
    RequestsContract().install(monkeypatch)
    with serve(app) as (base, _log):
        url = f"{base}/api/v1/jobs/{job_id}"
        assert requests.get(url, headers=ALICE, timeout=30).status_code == 200  # checked, fine
        original = job_json.job_json
        monkeypatch.setattr(
            "stylequeue.web.api.job_json", lambda job: {**original(job), "surprise": 1}
        )
        with pytest.raises(ContractViolation, match="surprise"):
            requests.get(url, headers=ALICE, timeout=30)


WEBHOOK = "https://hooks.example.com/x"


@pytest.mark.parametrize(
    "events",
    ["started", "completed,started", " progress , completed ", "started,,completed,",
     ",\tstarted", "started,progress,completed", "started,started", "started, Started",
     "start", ",", " ", "started;completed", "started,progress,started", "completed\n,completed"],
)  # fmt: skip
def test_the_documented_webhook_events_are_what_the_table_accepts(client, events: str) -> None:
    """The pattern says what the table's coercion and check accept: each event once,
    comma-separated, spaces and empty items dropped (Schemathesis holds the document to it
    both ways: no positive draw refused, no negative one accepted)."""
    form = _document(client)["components"]["schemas"]["JobSubmission"]["properties"]
    pattern = next(s for s in form["webhook_events"]["anyOf"] if "pattern" in s)["pattern"]
    try:
        JobOptions.from_inputs({"webhook": WEBHOOK, "webhook_events": events})
        accepted = True
    except ParamError:
        accepted = False
    assert (re.search(pattern, events) is not None) == accepted


def test_every_operation_may_answer_a_rate_limits_429_with_retry_after(client) -> None:
    """The refused-credentials limit answers any request that carries a credential."""
    for path, operations in _document(client)["paths"].items():
        for method, operation in operations.items():
            answer = operation["responses"].get("429")
            assert answer is not None, (method, path)
            assert "Retry-After" in answer["headers"], (method, path)


def test_a_webhook_delivery_is_what_the_job_schema_says() -> None:
    from datetime import UTC, datetime

    from jsonschema import Draft202012Validator

    from stylequeue.shared.models import WebhookDelivery
    from stylequeue.web.job_schema import WEBHOOK_DELIVERY
    from stylequeue.web.webhook_json import delivery_json

    now = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    for status, error, retry in ((200, None, None), (None, "timed out", now)):
        delivery = WebhookDelivery(
            message_id="msg_1", attempt=2, attempted_at=now, status_code=status, error=error,
            next_attempt_at=retry,
        )  # fmt: skip
        Draft202012Validator(WEBHOOK_DELIVERY).validate(delivery_json(delivery, "completed"))
