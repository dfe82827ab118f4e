"""Fixtures for the web tests: an app on real Redis, a real database and folder storage.

``app`` is built from the shared ``settings`` fixture (SQLite, and PostgreSQL when
configured); bearer tokens ``alice-token`` / ``bob-token`` are configured there.
"""

from __future__ import annotations

import pytest
from flask import Flask
from flask.testing import FlaskClient

from stylequeue.shared.settings import Settings
from stylequeue.shared.storage import Storage, get_storage
from stylequeue.web import create_app
from tests.openapi_contract import ContractClient


@pytest.fixture
def app(settings: Settings) -> Flask:
    return create_app(settings)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def storage(settings: Settings) -> Storage:
    return get_storage(settings)


@pytest.fixture(autouse=True)
def contract_client(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every ``app.test_client()`` of the web tests checks each ``/api/v1`` response against
    the app's OpenAPI document (tests/openapi_contract.py)."""
    monkeypatch.setattr(Flask, "test_client_class", ContractClient)
