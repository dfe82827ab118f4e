"""A tiled job's progress within its iteration reaches the progress answer (the dashboard's
poll): the newest tile entry of the running iteration, nothing otherwise."""

from __future__ import annotations

import redis
from flask.testing import FlaskClient

from stylequeue.shared.redis_keys import lock_key
from stylequeue.shared.settings import Settings
from stylequeue.shared.states import utcnow
from stylequeue.shared.tile_progress import AttemptTiles
from tests.web.helpers import ALICE, insert_job, update_job


def _tiles(client: FlaskClient, job_id: str) -> object:
    response = client.get(f"/api/v1/jobs/{job_id}/progress", headers=ALICE)
    assert response.status_code == 200
    return response.get_json()["tiles"]


def test_the_running_iterations_tiles_are_in_the_progress_answer(
    client: FlaskClient, settings: Settings
) -> None:
    job_id = insert_job(settings, status="running", started_at=utcnow(), iterations_done=2)
    assert _tiles(client, job_id) is None  # not tiled (or not started its pass)
    r = redis.Redis.from_url(settings.redis_url)
    r.set(lock_key(job_id), "tok")
    tiles = AttemptTiles(r, job_id, "tok", ttl=60)
    for done in (1, 2, 3):
        tiles.append_checking_cancel(
            {"iteration": 3, "phase": "step", "done": done, "total": 9, "elapsed": 12.5}
        )
    assert _tiles(client, job_id) == {
        "iteration": 3, "phase": "step", "done": 3, "total": 9, "elapsed": 12.5,
    }  # fmt: skip
    # iteration 3 finished: its tiles are old news
    update_job(settings, job_id, iterations_done=3)
    assert _tiles(client, job_id) is None
    # the preparation pass comes before iteration 1
    update_job(settings, job_id, iterations_done=0)
    tiles.append_checking_cancel(
        {"iteration": 0, "phase": "targets", "done": 1, "total": 20, "elapsed": 1.0}
    )
    assert _tiles(client, job_id)["phase"] == "targets"  # type: ignore[index]
    # only while it runs
    update_job(settings, job_id, status="canceled", finished_at=utcnow())
    assert _tiles(client, job_id) is None
    r.close()
