"""shared.quota on SQLite and PostgreSQL: every cap, and the insert that checks them under a
lock, so two inserts for the last slot never both win."""

from __future__ import annotations

import contextlib
import threading
from typing import Any

import pytest
from sqlalchemy import func, select

from stylequeue.shared import quota
from stylequeue.shared.db import get_sessionmaker, session_scope
from stylequeue.shared.models import Job, new_id
from stylequeue.shared.quota import CapReached, Caps, check_caps, insert_within_caps
from stylequeue.shared.settings import Settings
from stylequeue.shared.states import utcnow
from tests.factories import insert_job

ALICE, BOB = "api:alice", "api:bob"
ROOMY = Caps(max_active=100, anonymous_max_active=100, address_max_active=100, quota_bytes=0)


def new_job(owner: str = ALICE, *, client_key: str | None = None, size: int = 0) -> Job:
    return Job(id=new_id(), owner=owner, status="queued", params={"iterations": 5},
               input_keys={"content": "x", "styles": ["y"]}, iterations_total=5,
               created_at=utcnow(), client_key=client_key, input_bytes=size)  # fmt: skip


def rows(settings: Settings, owner: str | None = None) -> int:
    query = select(func.count()).select_from(Job)
    if owner is not None:
        query = query.where(Job.owner == owner)
    with session_scope(settings.database_url) as session:
        return session.scalar(query) or 0


def insert(settings: Settings, job: Job, caps: Caps) -> None:
    with get_sessionmaker(settings.database_url)() as session:
        insert_within_caps(session, job, caps)


def test_the_owner_cap_counts_active_jobs_only(settings: Settings) -> None:
    insert_job(settings, ALICE, status="running")
    insert_job(settings, ALICE, status="succeeded")  # ended: not counted
    caps = Caps(1, 100, 100, 0)
    with pytest.raises(CapReached) as refused:
        insert(settings, new_job(), caps)
    assert (refused.value.kind, refused.value.used, refused.value.limit) == ("owner_active", 1, 1)
    assert rows(settings, ALICE) == 2
    insert(settings, new_job(BOB), caps)  # another owner's own count
    insert(settings, new_job(), Caps(2, 100, 100, 0))
    assert rows(settings, ALICE) == 3


def test_the_anonymous_cap_counts_every_browser_session(settings: Settings) -> None:
    caps = Caps(10, 2, 100, 0)
    insert(settings, new_job("web:one"), caps)
    insert(settings, new_job("web:two"), caps)
    with pytest.raises(CapReached) as refused:
        insert(settings, new_job("web:three"), caps)
    assert refused.value.kind == "anonymous_active"
    insert(settings, new_job(ALICE), caps)  # API owners are not anonymous
    insert(settings, new_job("webby:x"), caps)  # nor an owner that merely starts alike
    assert rows(settings) == 4


def test_the_address_cap_counts_the_anonymous_owners_of_one_address(settings: Settings) -> None:
    caps = Caps(10, 100, 2, 0)
    insert(settings, new_job("web:one", client_key="addr-a"), caps)
    insert(settings, new_job("web:two", client_key="addr-a"), caps)
    with pytest.raises(CapReached) as refused:
        insert(settings, new_job("web:three", client_key="addr-a"), caps)
    assert (refused.value.kind, refused.value.used) == ("address_active", 2)
    insert(settings, new_job("web:four", client_key="addr-b"), caps)
    assert rows(settings) == 3


def test_the_storage_quota_counts_every_job_of_the_owner(settings: Settings) -> None:
    caps = Caps(10, 100, 100, 1000)
    insert(settings, new_job(size=600), caps)
    with session_scope(settings.database_url) as session:
        session.execute(Job.__table__.update().values(status="succeeded"))  # ended: still stored
    with pytest.raises(CapReached) as refused:
        insert(settings, new_job(size=401), caps)
    assert (refused.value.kind, refused.value.used, refused.value.limit) == ("storage", 600, 1000)
    insert(settings, new_job(size=400), caps)  # exactly up to the quota
    insert(settings, new_job(BOB, size=1000), caps)
    with get_sessionmaker(settings.database_url)() as session:
        with pytest.raises(CapReached):
            check_caps(session, ALICE, None, caps, incoming_bytes=1)
        check_caps(session, ALICE, None, Caps(10, 100, 100, 0), incoming_bytes=10**9)


@pytest.mark.parametrize("owners", [("api:alice", "api:alice"), ("web:one", "web:two")])
def test_concurrent_inserts_never_pass_a_cap(
    settings: Settings, database_backend: str, monkeypatch: pytest.MonkeyPatch, owners: Any
) -> None:
    """Two inserts for the last slot at once: each counts, and (without the lock) both would
    see room before either inserts. Exactly one row results: for one owner, and for two
    anonymous owners sharing the anonymous cap."""
    barrier = threading.Barrier(2)
    real = quota._counts

    def count_then_wait(*args: Any, **kwargs: Any) -> dict[str, int]:
        counts = real(*args, **kwargs)
        # both have counted before either inserts, unless one waits for the other
        with contextlib.suppress(threading.BrokenBarrierError):
            barrier.wait(timeout=2)
        return counts

    monkeypatch.setattr(quota, "_counts", count_then_wait)
    caps = Caps(max_active=1, anonymous_max_active=1, address_max_active=100, quota_bytes=0)
    results: list[str] = []

    def insert_one(owner: str) -> None:
        try:
            insert(settings, new_job(owner), caps)
            results.append("inserted")
        except CapReached:
            results.append("refused")

    threads = [threading.Thread(target=insert_one, args=(owner,)) for owner in owners]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sorted(results) == ["inserted", "refused"]
    assert rows(settings) == 1


def test_advisory_keys_share_room_as_the_caps_do() -> None:
    key = quota.advisory_lock_key
    assert key("web:one") == key("web:two")  # the anonymous cap is one room
    assert key("api:alice") != key("api:bob") != key("web:one")
    assert -(2**63) <= key("api:alice") < 2**63
