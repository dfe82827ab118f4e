"""Purge benchmark: how fast deleted and expired jobs' files go, per store.

    python bench/purge.py [--jobs 200] [--snapshots 20] [--deletes 20] [--out FILE]

For each store (a local folder, and a bucket on moto's S3 server in a subprocess), with a
private Redis and SQLite:

1. **One delete**, as ``DELETE /api/v1/jobs/<id>`` does it (``shared.deletion``: the row
   and its tombstone in one transaction, then the purge under the job's lock): median and
   max over ``--deletes`` jobs.
2. **Retention**: ``--jobs`` finished jobs, all past the retention, removed by sweeper
   passes (``shared.sweeper.sweep``: at most ``EXPIRE_BATCH`` expired and ``PURGE_BATCH``
   purged a pass, within ``PURGE_SECONDS``); the passes it took, jobs purged per second and
   the longest pass (which must stay well inside the sweep lock's ``SWEEP_LOCK_SECONDS``).

Each job has what a finished job has: 2 inputs, ``--snapshots`` snapshot PNGs, a result and
a history under its attempt, a checkpoint and 2 cached thumbnails (small objects: the cost
is per object and per request, not per byte). Figures depend on the machine and, for S3, on
moto standing in for a real store (a remote one adds its round trips).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import boto3  # noqa: E402
import redis  # noqa: E402

from stylequeue.shared import keys, sweeper  # noqa: E402
from stylequeue.shared.celery_app import create_celery  # noqa: E402
from stylequeue.shared.db import get_sessionmaker, session_scope  # noqa: E402
from stylequeue.shared.deletion import PurgeResult, delete_owned_job, purge  # noqa: E402
from stylequeue.shared.migrate import upgrade  # noqa: E402
from stylequeue.shared.models import Job  # noqa: E402
from stylequeue.shared.settings import Settings, load_settings  # noqa: E402
from stylequeue.shared.states import utcnow  # noqa: E402
from stylequeue.shared.storage import get_storage  # noqa: E402
from tests import services  # noqa: E402
from tests.factories import content_image, make_job, png_bytes  # noqa: E402

OWNER = "api:bench"


def store_job(settings: Settings, picture: bytes, snapshots: int, old: bool) -> str:
    ended = utcnow() - timedelta(days=settings.retention_days + 1) if old else utcnow()
    job = make_job(settings, owner=OWNER, status="succeeded", attempts=1, finished_at=ended)
    storage = get_storage(settings)
    for i in range(1, snapshots + 1):
        storage.put(keys.snapshot_key(job.id, i, attempt=1), picture, "image/png")
    storage.put(keys.result_key(job.id, attempt=1), picture, "image/png")
    storage.put(keys.history_key(job.id, attempt=1), b'{"entries": []}')
    storage.put(keys.checkpoint_key(job.id, attempt=1, iteration=snapshots), picture)
    for name in ("result-160", "content-160"):
        storage.put(f"{keys.job_prefix(job.id)}thumbs/{name}.thumb", picture)
    return job.id


def objects(settings: Settings) -> int:
    return len(get_storage(settings).list("jobs/"))


def one_delete(settings: Settings, job_ids: list[str]) -> list[float]:
    sessions = get_sessionmaker(settings.database_url)
    client = redis.Redis.from_url(settings.redis_url)
    storage = get_storage(settings)
    took = []
    for job_id in job_ids:
        t0 = time.perf_counter()
        with sessions() as session:
            assert delete_owned_job(session, job_id, OWNER) is not None
        result = purge(sessions, storage, client, job_id, lock_ttl_seconds=60)
        took.append(time.perf_counter() - t0)
        assert result is PurgeResult.PURGED, result
    client.close()
    return took


def retention(settings: Settings) -> dict[str, Any]:
    app = create_celery(settings)
    passes: list[tuple[float, int]] = []
    t0 = time.perf_counter()
    while True:
        start = time.perf_counter()
        report = sweeper.sweep(settings, app)
        passes.append((time.perf_counter() - start, report.purged))
        assert not report.errors, report.errors
        if not report.expired and not report.purged:
            break
    total = time.perf_counter() - t0
    app.close()
    purged = sum(n for _, n in passes)
    return {
        "passes": len(passes) - 1,  # the last one found nothing
        "purged": purged,
        "seconds": total,
        "per_second": purged / total if total else 0.0,
        "longest_pass": max(s for s, _ in passes),
    }


def run_store(name: str, settings: Settings, args: argparse.Namespace) -> dict[str, Any]:
    picture = png_bytes(content_image(64, 48))
    young = [store_job(settings, picture, args.snapshots, old=False) for _ in range(args.deletes)]
    per_job = objects(settings) // len(young)
    took = one_delete(settings, young)
    for _ in range(args.jobs):
        store_job(settings, picture, args.snapshots, old=True)
    swept = retention(settings)
    with session_scope(settings.database_url) as session:
        assert session.query(Job).count() == 0
    assert objects(settings) == 0, "objects left behind"
    return {
        "store": name,
        "objects_per_job": per_job,
        "delete_median_ms": 1000 * statistics.median(took),
        "delete_max_ms": 1000 * max(took),
        **swept,
    }


def settings_for(tmp: Path, redis_url: str, **extra: Any) -> Settings:
    db = f"sqlite:///{tmp / 'bench.db'}"
    upgrade(db)
    base = load_settings({"STYLEQUEUE_VAR_DIR": str(tmp / "var"), "STYLEQUEUE_SECRET_KEY": "b"})
    values = {"storage_url": f"file://{tmp / 'objects'}", **extra}
    return replace(base, database_url=db, redis_url=redis_url, **values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=200, help="expired jobs for retention")
    parser.add_argument("--snapshots", type=int, default=20, help="snapshots per job")
    parser.add_argument("--deletes", type=int, default=20, help="jobs deleted one by one")
    parser.add_argument("--out", type=Path, help="also write the table to this file")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        with services.private_redis(tmp / "redis") as (redis_url, _):
            folder = settings_for(tmp / "folder", redis_url)
            rows.append(run_store("folder", folder, args))
            redis.Redis.from_url(redis_url).flushdb()
            with services.moto_server() as endpoint:
                for key, value in services.s3_env(endpoint).items():
                    os.environ[key] = value
                boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="bench")
                s3 = settings_for(
                    tmp / "s3", redis_url, storage_url="s3://bench", s3_endpoint_url=endpoint
                )
                rows.append(run_store("moto S3", s3, args))
    lines = [
        f"# purge benchmark, {time.strftime('%Y-%m-%d')}: {args.jobs} expired jobs, "
        f"{args.deletes} single deletes, {args.snapshots} snapshots a job",
        f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}; batches: expire {sweeper.EXPIRE_BATCH}, "
        f"purge {sweeper.PURGE_BATCH} within {sweeper.PURGE_SECONDS:g} s, "
        f"sweep lock {sweeper.SWEEP_LOCK_SECONDS} s",
        "",
        "| store | objects/job | one delete, median (ms) | max (ms) | retention passes | "
        "jobs purged/s | longest pass (s) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['store']} | {r['objects_per_job']} | {r['delete_median_ms']:.1f} | "
            f"{r['delete_max_ms']:.1f} | {r['passes']} | {r['per_second']:.1f} | "
            f"{r['longest_pass']:.2f} |"
        )
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
