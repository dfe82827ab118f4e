"""Admission by memory: a job is taken only if a live worker can hold it (untiled or in
tiles); otherwise a 422 on ``max_size`` naming the largest size that fits. ``/api/v1/config``
and the form show the largest size the fleet can paint."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis
from flask.testing import FlaskClient

from stylequeue.shared import fleet
from stylequeue.shared.memory import estimate_memory, fits, largest_size
from stylequeue.shared.params import TransferParams
from stylequeue.shared.settings import Settings
from stylequeue.shared.storage import Storage
from tests.web import images
from tests.web.helpers import count_jobs, error_of, submit

F32 = TransferParams(precision="float32")
# a 96 x 64 px picture: at max_size 96 it is painted as it is, at 128 never enlarged; a
# 192 x 128 one is painted at 128 x 85 or 96 x 64
WIDE = images.png((192, 128))


@pytest.fixture
def registry(settings: Settings) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(settings.redis_url)
    yield client
    client.close()


def announce(client: redis.Redis, name: str, budget: int | None, **info: object) -> None:
    entry = {"weights": "random", "weights_ok": True, "precision": "float32", "device": "CPU",
             "memory_budget": budget, **info}  # fmt: skip
    fleet.announce(client, name, entry)


def budget_for(width: int, height: int) -> int:
    """Exactly what a float32 CPU worker needs to paint width x height untiled."""
    return estimate_memory((height, width), F32, "float32")


def test_without_budgets_nothing_is_checked(client: FlaskClient, registry: redis.Redis) -> None:
    announce(registry, "old@box", None)  # a worker from before budgets: not counted
    response = submit(client, content=WIDE, fields={"iterations": "3", "max_size": "128"})
    assert response.status_code == 201, response.get_json()
    config = client.get("/api/v1/config").get_json()
    assert config["fleet"] == {"max_size": None, "max_size_untiled": None, "workers": 0}
    assert "fleet-capacity" not in client.get("/").get_data(as_text=True)


def test_a_job_no_live_worker_can_hold_is_a_422_naming_max_size(
    client: FlaskClient, registry: redis.Redis, settings: Settings, storage: Storage
) -> None:
    budget = budget_for(96, 64)  # 128 x 85 fits neither untiled nor in tiles
    assert not fits((85, 128), F32, budget) and fits((64, 96), F32, budget)
    announce(registry, "small@box", budget)
    response = submit(client, content=WIDE, fields={"iterations": "3", "max_size": "128"})
    assert response.status_code == 422
    error = error_of(response)
    assert error["field"] == "max_size" and error["code"] == "too_large_for_workers"
    largest = largest_size(budget, F32, "float32", aspect=128 / 192, cap=128)
    assert 96 <= largest < 128
    assert f"the largest this picture fits at is max_size {largest}" in error["message"]
    assert "128x85 px" in error["message"]
    assert count_jobs(settings) == 0 and storage.list("jobs/") == []  # nothing stored
    # at the size it names, the same picture is taken
    fields = {"iterations": "3", "max_size": str(largest)}
    assert submit(client, content=WIDE, fields=fields).status_code == 201


def test_one_worker_that_can_hold_it_is_enough(client: FlaskClient, registry: redis.Redis) -> None:
    announce(registry, "small@box", budget_for(32, 32))
    announce(registry, "big@box", budget_for(128, 128))
    response = submit(client, content=WIDE, fields={"iterations": "3", "max_size": "128"})
    assert response.status_code == 201, response.get_json()


def test_the_workers_device_counts(client: FlaskClient, registry: redis.Redis) -> None:
    # a GPU's budget is its free memory, which holds no Python or TensorFlow runtime
    budget = estimate_memory((85, 128), F32, "float32", device="gpu")
    assert budget < budget_for(128, 85)
    announce(registry, "gpu@box", budget, device="GPU")
    fields = {"iterations": "3", "max_size": "128"}
    assert submit(client, content=WIDE, fields=fields).status_code == 201
    registry.flushdb()
    announce(registry, "cpu@box", budget)
    assert submit(client, content=WIDE, fields=fields).status_code == 422


def test_config_and_form_show_the_largest_size_the_fleet_can_paint(
    client: FlaskClient, registry: redis.Redis
) -> None:
    budget = budget_for(100, 100)
    announce(registry, "w@box", budget)
    config = client.get("/api/v1/config").get_json()
    want = largest_size(budget, F32, "float32", cap=128)
    assert config["fleet"] == {"max_size": want, "max_size_untiled": 100, "workers": 1}
    page = client.get("/").get_data(as_text=True)
    assert f"The workers online can paint up to {want} px" in page
    # the server's own cap bounds it: a big worker shows STYLEQUEUE_MAX_SIZE (128 here)
    registry.flushdb()
    announce(registry, "big@box", 10**12)
    assert client.get("/api/v1/config").get_json()["fleet"]["max_size"] == 128
