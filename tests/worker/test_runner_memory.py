"""The worker's memory budget decides how a job runs: in tiles above what fits untiled, with
progress per tile in the job's tile stream and a cancel taking effect within one tile;
refused (failed, with the estimate and the budget) when nothing fits."""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from typing import Any

import numpy as np
import pytest
import redis

from stylequeue.shared.memory import estimate_memory, estimate_tiled_memory
from stylequeue.shared.redis_keys import cancel_key, tiles_key
from stylequeue.shared.settings import Settings
from stylequeue.worker import runner
from stylequeue.worker.engine.hardware import device_kind, resolve_precision
from tests.factories import SMALL_PARAMS, get_job, make_job
from tests.worker_process import check_finished_job

WORKER = "test@host/1"
SIZE = 384  # 2 x 2 tiles of 192 px (+ 96 px halo) when the budget is between the two ways
PARAMS = replace(SMALL_PARAMS, iterations=2, max_size=SIZE, snapshot_every=1)


def _content() -> np.ndarray:
    rng = np.random.default_rng(5)
    return (rng.random((SIZE, SIZE, 3)) * 255).astype(np.uint8)


def _tiling_budget(settings: Settings) -> int:
    """A budget that holds the job in 192 px tiles but not untiled."""
    precision = resolve_precision(settings.precision)
    params = replace(PARAMS, precision=precision)
    tiled = estimate_tiled_memory(SIZE, 192, params, precision, device=device_kind())
    untiled = estimate_memory(SIZE, params, precision, device=device_kind())
    assert tiled < untiled
    return (tiled + untiled) // 2


def _tiles(client: redis.Redis, job_id: str) -> list[dict[str, Any]]:
    rows = client.xrange(tiles_key(job_id))
    return [{k.decode(): v.decode() for k, v in fields.items()} for _, fields in rows]


@pytest.fixture
def client(wsettings: Settings) -> Any:
    c = redis.Redis.from_url(wsettings.redis_url)
    yield c
    c.close()


def test_a_job_above_the_budget_runs_in_tiles(wsettings: Settings, client: Any) -> None:
    settings = replace(wsettings, worker_memory=_tiling_budget(wsettings))
    job = make_job(settings, params=PARAMS, content=_content())
    outcome = runner.execute(job.id, settings, worker_name=WORKER)
    assert (outcome.status, outcome.iterations) == ("succeeded", 2)
    done = get_job(settings, job.id)
    assert (done.width, done.height) == (SIZE, SIZE)
    check_finished_job(settings, job.id, 2, 1)
    tiles = _tiles(client, job.id)
    last = tiles[-1]
    # 4 tiles, two passes an iteration (the Grams first, then the step)
    assert [last[k] for k in ("iteration", "phase", "done", "total")] == ["2", "step", "8", "8"]
    assert {"grams", "step"} <= {t["phase"] for t in tiles} <= {"targets", "grams", "step"}


def test_a_cancel_takes_effect_within_one_tile(wsettings: Settings, client: Any) -> None:
    settings = replace(wsettings, worker_memory=_tiling_budget(wsettings))
    job = make_job(settings, params=replace(PARAMS, iterations=5), content=_content())
    seen: list[int] = []

    def cancel_at_the_first_step_tile() -> None:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            tiles = _tiles(client, job.id)
            if any(t["phase"] == "step" for t in tiles):
                client.set(cancel_key(job.id), b"1")
                seen.append(len(tiles))
                return
            time.sleep(0.01)

    watcher = threading.Thread(target=cancel_at_the_first_step_tile)
    watcher.start()
    outcome = runner.execute(job.id, settings, worker_name=WORKER)
    watcher.join()
    assert outcome.status == "canceled"
    # the tile after the cancel was written reads the flag: at most one more tile ran (and
    # the one the watcher saw may have been followed by one already in flight)
    assert seen and len(_tiles(client, job.id)) <= seen[0] + 2
    assert get_job(settings, job.id).iterations_done < 5


def test_a_job_that_fits_no_way_fails_with_the_estimate_and_the_budget(
    wsettings: Settings,
) -> None:
    settings = replace(wsettings, worker_memory=100 * 10**6)
    job = make_job(settings)
    outcome = runner.execute(job.id, settings, worker_name=WORKER)
    assert outcome.status == "failed"
    error = get_job(settings, job.id).error
    assert error is not None and error.startswith("BudgetError: a 40x32 px job needs about ")
    assert "more than the memory budget of 100 MB" in error
