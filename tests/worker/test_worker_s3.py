"""A worker on S3 storage (moto's server) whose configured weights are missing.

One worker covers both: a job asking for ``random`` weights runs and stores everything in
the bucket; a job left on the worker's default (a missing ``.h5``) fails with the engine's
readable message; the worker said so once at start and in the fleet registry.
"""

from __future__ import annotations

from collections.abc import Callable

import redis

from stylequeue.shared import fleet, keys
from stylequeue.shared.settings import Settings
from stylequeue.shared.storage import S3Storage, get_storage
from tests.factories import submit
from tests.worker_process import WorkerProcess, check_finished_job, wait_for_status

MISSING = "/nonexistent/vgg19_weights_notop.h5"


def test_s3_storage_and_missing_weights(
    make_settings: Callable[..., Settings],
    database_url: str,
    wredis_url: str,
    s3_bucket: str,
    s3_endpoint: str,
    start_worker: Callable[..., WorkerProcess],
) -> None:
    from stylequeue.shared.celery_app import create_celery

    settings = make_settings(
        database_url=database_url, redis_url=wredis_url, storage_url=f"s3://{s3_bucket}",
        s3_endpoint_url=s3_endpoint, vgg19_weights=MISSING, lock_ttl_seconds=3,
        queued_grace_seconds=0,
    )  # fmt: skip
    assert isinstance(get_storage(settings), S3Storage)
    worker = start_worker(settings)  # stopped (and its log shown on failure) at teardown
    app = create_celery(settings)
    try:
        log = worker.log_text()
        assert f"WARNING: VGG19 weights '{MISSING}' unavailable: " in log
        assert "STYLEQUEUE_VGG19_WEIGHTS=random" in log and log.count("unavailable") == 1
        info = worker.fleet_info()
        assert info and info["weights_ok"] is False and MISSING in info["weights_error"]

        good = submit(settings, app, params={"iterations": 6, "snapshot_every": 2,
                                             "weights": "random"})  # fmt: skip
        bad = submit(settings, app)
        done = wait_for_status(settings, good.id, "succeeded", "failed", worker=worker)
        assert done.status == "succeeded", done.error
        assert done.weights == "random"
        check_finished_job(settings, good.id, 6, 2)
        listed = get_storage(settings).list(keys.job_prefix(good.id))
        assert done.history_key in listed and done.result_key in listed

        failed = wait_for_status(settings, bad.id, "succeeded", "failed", worker=worker)
        assert failed.status == "failed"
        assert MISSING in failed.error and "STYLEQUEUE_VGG19_WEIGHTS" in failed.error
        assert "\n" not in failed.error and failed.result_key is None

        worker.stop()  # warm shutdown: the child retires from the fleet registry
        client = redis.Redis.from_url(settings.redis_url)
        assert worker.nodename not in [w["name"] for w in fleet.list_workers(client)]
        client.close()
    finally:
        app.close()
