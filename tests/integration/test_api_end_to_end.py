"""A job's whole life through the HTTP API of a live server with a real worker behind it.

Submit (bearer token, or a browser-like cookie session with its CSRF token), watch the
progress stream grow while the job runs, read the snapshots and the result, lose Redis's
copy of the progress and still get everything from storage; other callers see nothing;
cancel mid-run. Once more on S3 storage (moto's server).
"""

from __future__ import annotations

import itertools
import math
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import requests

from stylequeue.shared import keys
from stylequeue.shared.progress import stream_key
from stylequeue.shared.settings import Settings
from tests import services
from tests.integration.conftest import (
    API,
    CONTENT_WH,
    TERMINAL,
    WAIT,
    Stack,
    build_settings,
    cookie_session,
    get_json,
    open_png,
    start_stack,
    submit,
    submit_ok,
    token_session,
    wait_until_finished,
)

N = 30  # iterations of the watched job: enough to read its progress more than once mid-run
SNAPSHOT_EVERY = 7  # not a divisor of N: the last iteration gets a snapshot of its own
SIZE = 48
EXPECTED_WH = (48, 36)  # the 80x60 content scaled so its longest side is SIZE
ENTRY_FIELDS = {"id", "iteration", "loss", "content", "style", "tv", "elapsed"}


def id_key(stream_id: str) -> tuple[int, int]:
    ms, seq = stream_id.split("-")
    return int(ms), int(seq)


def session_for(stack: Stack, auth: str) -> requests.Session:
    return token_session("alice") if auth == "token" else cookie_session(stack)


def strangers(stack: Stack, auth: str) -> list[requests.Session]:
    """Callers that must not see the owner's job: another token and another browser."""
    others = [cookie_session(stack)]
    others.append(token_session("bob"))
    if auth == "cookie":
        others.append(token_session("alice"))  # a token does not reach a browser's jobs
    return others


# ---- progress ------------------------------------------------------------------------------


def read_progress_live(
    stack: Stack, session: requests.Session, job: dict[str, Any]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Poll ``progress?after=<last_id>`` from submit until the job ends.

    Returns (all entries in the order received, one record per poll that returned entries).
    """
    url = stack.url + job["links"]["progress"]
    after: str | None = None
    entries: list[dict[str, Any]] = []
    pages: list[dict[str, Any]] = []
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        resp = session.get(url, params={"after": after} if after else None, timeout=30)
        assert resp.status_code == 200, resp.text
        page = resp.json()
        if page["entries"]:
            assert page["source"] == "stream", page
            assert page["last_id"] == page["entries"][-1]["id"], page
            pages.append({"status": page["status"], "entries": page["entries"], "after": after})
            entries.extend(page["entries"])
        after = page["last_id"] or after
        # The worker streams every entry before it commits the final status, so a page that
        # says "finished" (and is not full) holds the last entries.
        if page["status"] in TERMINAL and not page["more"]:
            return entries, pages
        time.sleep(0.02)
    raise AssertionError(
        f"job {job['id']} did not finish within {WAIT}s; read {len(entries)} entries\n"
        f"{stack.worker.log_tail()}"
    )


def check_entries(entries: list[dict[str, Any]], n: int) -> None:
    """Iterations 1..n in order, ids strictly increasing (so no duplicates), finite numbers."""
    assert [e["iteration"] for e in entries] == list(range(1, n + 1))
    ids = [id_key(e["id"]) for e in entries]
    assert ids == sorted(ids) and len(set(ids)) == len(ids), ids
    for e in entries:
        assert set(e) == ENTRY_FIELDS, e
        for name in ("loss", "content", "style", "tv", "elapsed"):
            assert isinstance(e[name], float) and math.isfinite(e[name]), e
    elapsed = [e["elapsed"] for e in entries]
    assert elapsed == sorted(elapsed), elapsed


def wait_for_iteration(
    stack: Stack, session: requests.Session, job: dict[str, Any], iteration: int
) -> list[dict[str, Any]]:
    """Poll the job's progress until it shows ``iteration``; all entries so far."""
    url = stack.url + job["links"]["progress"]
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        page = get_json(session, url)
        if page["entries"] and page["entries"][-1]["iteration"] >= iteration:
            return page["entries"]
        assert page["status"] in ("queued", "running"), page
        time.sleep(0.05)
    raise AssertionError(f"iteration {iteration} not streamed\n{stack.worker.log_tail()}")


def check_stream_kept_and_expiring(
    stack: Stack, job_id: str, entries: list[dict[str, Any]]
) -> None:
    """After the job ended, its progress stream is still in the stack's Redis with every
    entry it streamed, and it now expires: a TTL above 0 and at most progress_ttl_seconds.
    (The worker sets the expiry just after committing the final status, so wait for it.)"""
    client = stack.redis()
    key = stream_key(job_id)
    try:
        deadline = time.monotonic() + WAIT
        while client.ttl(key) == -1 and time.monotonic() < deadline:  # -1: no expiry yet
            time.sleep(0.05)
        ttl = client.ttl(key)
        assert ttl != -2, "the finished job's progress stream is gone already"
        assert 0 < ttl <= stack.settings.progress_ttl_seconds, (
            f"stream TTL {ttl} (-1: never expires); progress_ttl_seconds is "
            f"{stack.settings.progress_ttl_seconds}"
        )
        ids = [sid.decode() for sid, _fields in client.xrange(key)]
        assert ids == [e["id"] for e in entries]
    finally:
        client.close()


def forget_progress(stack: Stack) -> None:
    """What Redis losing its data (or the streams expiring) looks like to the web: every
    progress stream and cancel flag gone. (Not FLUSHDB: that would also drop the broker's
    queue bindings the module's long-lived worker and web app rely on.)"""
    client = stack.redis()
    try:
        doomed = [
            *client.scan_iter(match="stylequeue:progress:*"),
            *client.scan_iter(match="stylequeue:cancel:*"),
        ]
        if doomed:
            client.delete(*doomed)
        assert not list(client.scan_iter(match="stylequeue:progress:*"))
    finally:
        client.close()


# ---- the whole life of one job ---------------------------------------------------------------


def run_job_end_to_end(stack: Stack, session: requests.Session, others: list[requests.Session]):  # type: ignore[no-untyped-def]
    """Submit, watch, fetch, forget Redis, fetch again, and check others see nothing.
    Returns the finished job's JSON."""
    resp = submit(stack, session, iterations=N, max_size=SIZE, snapshot_every=SNAPSHOT_EVERY)
    assert resp.status_code == 201, resp.text
    created = resp.json()
    job_id = created["id"]
    assert uuid.UUID(job_id).version == 4 and str(uuid.UUID(job_id)) == job_id
    assert resp.headers["Location"].endswith(f"{API}/jobs/{job_id}")
    assert created["iterations_total"] == N and created["params"]["iterations"] == N
    assert created["params"]["max_size"] == SIZE and created["params"]["weights"] == "random"

    # -- progress, read incrementally while the job runs
    entries, pages = read_progress_live(stack, session, created)
    check_entries(entries, N)
    mid_run = [p for p in pages if p["status"] == "running" and p["entries"][-1]["iteration"] < N]
    assert mid_run, f"no progress was read while the job ran: {[len(p['entries']) for p in pages]}"
    assert len(pages) >= 2, "the progress came in one piece; expected several polls"
    for earlier, later in itertools.pairwise(pages):
        # each poll continued exactly after the previous one's last entry
        assert later["after"] == earlier["entries"][-1]["id"]
        assert later["entries"][0]["iteration"] == earlier["entries"][-1]["iteration"] + 1

    # -- the finished job
    job = get_json(session, stack.api(f"/jobs/{job_id}"))
    assert job["status"] == "succeeded", job
    assert job["error"] is None and job["terminal"] is True
    assert job["iterations_done"] == N and job["iterations_total"] == N
    assert job["weights"] == "random" and job["result_available"] is True
    assert (job["width"], job["height"]) == EXPECTED_WH
    assert job["started_at"] and job["finished_at"] and job["attempts"] == 1
    losses = [e["loss"] for e in entries]
    assert job["best_loss"] == pytest.approx(min(losses))
    assert 1 <= job["best_iteration"] <= N
    assert entries[job["best_iteration"] - 1]["loss"] == pytest.approx(job["best_loss"])
    expected_snapshots = sorted({*range(SNAPSHOT_EVERY, N + 1, SNAPSHOT_EVERY), N})
    assert job["snapshots"] == expected_snapshots

    # -- the job list
    listed = get_json(session, stack.api("/jobs"))
    assert job_id in [j["id"] for j in listed["jobs"]]

    # -- snapshots
    snaps = get_json(session, stack.url + job["links"]["snapshots"])["snapshots"]
    assert [s["iteration"] for s in snaps] == expected_snapshots
    snapshot_bytes = {}
    for snap in snaps:
        got = session.get(stack.url + snap["url"], timeout=30)
        assert got.status_code == 200, got.text
        assert got.headers["Content-Type"] == "image/png"
        img = open_png(got.content)
        assert img.size == EXPECTED_WH
        snapshot_bytes[snap["iteration"]] = got.content
    missing = session.get(stack.api(f"/jobs/{job_id}/snapshots/1"), timeout=30)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "snapshot_not_found"

    # -- the result, inline and as a download
    result = session.get(stack.url + job["links"]["result"], timeout=30)
    assert result.status_code == 200, result.text
    assert result.headers["Content-Type"] == "image/png"
    assert "Content-Disposition" not in result.headers
    img = open_png(result.content)
    assert img.size == EXPECTED_WH and img.mode == "RGB"
    assert img.size != CONTENT_WH  # really scaled down
    assert "private" in result.headers["Cache-Control"]  # only the owner may see it
    etag = result.headers["ETag"]
    cached = session.get(
        stack.api(f"/jobs/{job_id}/result"), headers={"If-None-Match": etag}, timeout=30
    )
    assert cached.status_code == 304 and cached.content == b""
    download = session.get(stack.api(f"/jobs/{job_id}/result"), params={"download": "1"})
    assert download.status_code == 200
    disposition = download.headers.get("Content-Disposition", "")
    assert disposition.startswith("attachment"), disposition
    assert f"stylequeue-{job_id}.png" in disposition
    assert download.content == result.content

    # -- other callers: 404 for everything, as for an id that does not exist
    for other in others:
        for path in ("", "/progress", "/result", "/snapshots", f"/snapshots/{N}"):
            got = other.get(stack.api(f"/jobs/{job_id}{path}"), timeout=30)
            assert got.status_code == 404, (path, got.status_code, got.text)
            assert got.json()["error"]["code"] == "job_not_found"
        got = other.post(stack.api(f"/jobs/{job_id}/cancel"), timeout=30)
        assert got.status_code == 404 and got.json()["error"]["code"] == "job_not_found"
        assert job_id not in [j["id"] for j in get_json(other, stack.api("/jobs"))["jobs"]]

    # -- the live stream outlives the job in Redis for a while, then expires
    check_stream_kept_and_expiring(stack, job_id, entries)

    # -- Redis forgets the progress: the record, the history (same ids) and images remain
    forget_progress(stack)
    client = stack.redis()
    assert not client.exists(stream_key(job_id))
    client.close()
    again = get_json(session, stack.api(f"/jobs/{job_id}"))
    assert again["status"] == "succeeded" and again["best_loss"] == job["best_loss"]
    assert again["snapshots"] == expected_snapshots and again["iterations_done"] == N
    history = get_json(session, stack.api(f"/jobs/{job_id}/progress"))
    assert history["source"] == "history", history
    assert history["status"] == "succeeded" and history["more"] is False
    assert history["entries"] == entries  # the same ids and numbers as the live stream
    assert history["last_id"] == entries[-1]["id"]
    # after= keeps working across the switch from the stream to the history
    tail = get_json(session, stack.api(f"/jobs/{job_id}/progress?after={entries[9]['id']}"))
    assert tail["source"] == "history" and tail["entries"] == entries[10:]
    done = get_json(session, stack.api(f"/jobs/{job_id}/progress?after={entries[-1]['id']}"))
    assert done["entries"] == [] and done["last_id"] == entries[-1]["id"]
    result_again = session.get(stack.api(f"/jobs/{job_id}/result"), timeout=30)
    assert result_again.status_code == 200 and result_again.content == result.content
    for it, data in snapshot_bytes.items():
        got = session.get(stack.api(f"/jobs/{job_id}/snapshots/{it}"), timeout=30)
        assert got.status_code == 200 and got.content == data
    for other in others:  # still nobody else's
        got = other.get(stack.api(f"/jobs/{job_id}/progress"), timeout=30)
        assert got.status_code == 404
    return job


@pytest.mark.parametrize("auth", ["token", "cookie"])
def test_job_end_to_end(stack: Stack, auth: str) -> None:
    session = session_for(stack, auth)
    if auth == "cookie":
        # a cookie-authenticated write without the session's CSRF token is refused
        bare = requests.Session()
        bare.cookies.update(session.cookies)
        refused = submit(stack, bare, iterations=5, max_size=32)
        assert refused.status_code == 403, refused.text
        assert refused.json()["error"]["code"] == "csrf_failed"
        assert get_json(session, stack.api("/jobs"))["total"] == 0  # nothing was created
    run_job_end_to_end(stack, session, strangers(stack, auth))


# ---- cancel -------------------------------------------------------------------------------


@pytest.mark.parametrize("auth", ["token", "cookie"])
def test_cancel_mid_run(stack: Stack, auth: str) -> None:
    session = session_for(stack, auth)

    # A succeeded job cannot be canceled.
    quick = submit_ok(stack, session, iterations=5, max_size=32, snapshot_every=0)
    finished = wait_until_finished(stack, session, quick["id"])
    assert finished["status"] == "succeeded", finished
    refused = session.post(stack.url + finished["links"]["cancel"], timeout=30)
    assert refused.status_code == 409, refused.text
    assert refused.json()["error"]["code"] == "job_finished"
    assert get_json(session, stack.url + finished["links"]["self"])["status"] == "succeeded"

    # A long job, canceled once it has run a few iterations.
    total = 4000
    job = submit_ok(stack, session, iterations=total, max_size=SIZE, snapshot_every=5)
    seen = wait_for_iteration(stack, session, job, 6)
    assert [e["iteration"] for e in seen] == list(range(1, len(seen) + 1))

    # A job queued behind it is canceled at once, and the worker never runs it.
    queued = submit_ok(stack, session, iterations=5, max_size=32, snapshot_every=0)
    resp = session.post(stack.url + queued["links"]["cancel"], timeout=30)
    assert resp.status_code == 202, resp.text
    assert resp.json()["status"] == "canceled", resp.json()

    stranger = token_session("bob")
    got = stranger.post(stack.url + job["links"]["cancel"], timeout=30)
    assert got.status_code == 404  # someone else cannot cancel it
    assert get_json(session, stack.url + job["links"]["self"])["status"] == "running"

    resp = session.post(stack.url + job["links"]["cancel"], timeout=30)
    assert resp.status_code == 202, resp.text
    answer = resp.json()
    assert answer["id"] == job["id"] and answer["cancel_requested"] is True
    assert answer["status"] in ("running", "canceled"), answer

    canceled = wait_until_finished(stack, session, job["id"])
    assert canceled["status"] == "canceled", canceled
    assert canceled["cancel_requested"] is True and canceled["finished_at"]
    done = canceled["iterations_done"]
    assert len(seen) <= done < total, canceled
    assert canceled["result_available"] is True
    assert 1 <= canceled["best_iteration"] <= done

    # the best-so-far image is the result
    result = session.get(stack.url + canceled["links"]["result"], timeout=30)
    assert result.status_code == 200, result.text
    assert open_png(result.content).size == EXPECTED_WH
    download = session.get(stack.url + canceled["links"]["download"], timeout=30)
    assert download.status_code == 200 and download.content == result.content
    assert download.headers["Content-Disposition"].startswith("attachment")

    # progress stops where the job stopped (and does not run on after the cancel)
    progress = get_json(session, stack.url + canceled["links"]["progress"])
    assert progress["status"] == "canceled"
    check_entries(progress["entries"], len(progress["entries"]))
    assert len(progress["entries"]) == done

    # cancel again: accepted, nothing changes
    again = session.post(stack.url + canceled["links"]["cancel"], timeout=30)
    assert again.status_code == 202, again.text
    assert again.json()["status"] == "canceled"
    time.sleep(0.5)  # give a (wrong) restart the chance to show
    still = get_json(session, stack.url + canceled["links"]["self"])
    assert still["status"] == "canceled" and still["iterations_done"] == done
    assert still["finished_at"] == canceled["finished_at"]

    # the worker is free again: the next job runs
    after = submit_ok(stack, session, iterations=3, max_size=32, snapshot_every=0)
    assert wait_until_finished(stack, session, after["id"])["status"] == "succeeded"
    # ... and it went past the job canceled while queued (sent earlier) without running it
    skipped = get_json(session, stack.url + queued["links"]["self"])
    assert skipped["status"] == "canceled" and skipped["started_at"] is None, skipped
    assert skipped["iterations_done"] == 0 and skipped["result_available"] is False
    no_result = session.get(stack.url + queued["links"]["result"], timeout=30)
    assert no_result.status_code == 404, no_result.text
    assert no_result.json()["error"]["code"] == "result_not_ready"
    assert get_json(session, stack.url + queued["links"]["progress"])["entries"] == []


# ---- once on S3 storage ----------------------------------------------------------------------


@pytest.fixture
def s3_stack(
    database_url: str,
    s3_bucket: str,
    s3_endpoint: str,
    tmp_path: Path,
) -> Iterator[Stack]:
    """A stack of its own (own redis-server, own worker) whose objects live in a bucket of
    moto's S3 server; ``s3_bucket`` put the AWS settings in the environment the worker
    inherits."""
    assert os.environ["STYLEQUEUE_S3_ENDPOINT_URL"] == s3_endpoint
    with services.private_redis(tmp_path / "redis") as (redis_url, _proc):
        settings: Settings = build_settings(
            tmp_path / "var", database_url, redis_url,
            storage_url=f"s3://{s3_bucket}", s3_endpoint_url=s3_endpoint,
        )  # fmt: skip
        yield from start_stack(settings, tmp_path / "logs")


def test_job_end_to_end_on_s3(s3_stack: Stack, s3_bucket: str, s3_endpoint: str) -> None:
    session = token_session("alice")
    job = run_job_end_to_end(s3_stack, session, [token_session("bob")])
    job_id = job["id"]
    s3 = boto3.client("s3", endpoint_url=s3_endpoint)
    listed = s3.list_objects_v2(Bucket=s3_bucket, Prefix=keys.job_prefix(job_id))
    stored = {obj["Key"] for obj in listed.get("Contents", [])}
    attempt = job["attempts"]
    # (the content, a PNG, is kept as lossless WebP)
    assert {keys.result_key(job_id, attempt=attempt), keys.history_key(job_id, attempt=attempt),
            keys.content_key(job_id, "webp")} <= stored  # fmt: skip
    assert {keys.snapshot_key(job_id, it, attempt=attempt) for it in job["snapshots"]} <= stored
    # nothing went to the local folder
    var = Path(s3_stack.settings.var_dir)
    assert not list(var.rglob("*.png")), list(var.rglob("*.png"))
    # (run_job_end_to_end checked, in this stack's own Redis, that the live stream was kept
    # after the job with an expiry, before forgetting it and reading the history from S3.)
