"""shared/db.py: a row read ``with_for_update`` cannot change under its reader.

The runner's fence, the sweeper and cancel read a row, check it, then write it; that is
only safe if nobody else can commit a change between the read and the write. PostgreSQL
gives that with ``SELECT ... FOR UPDATE``; SQLite ignores ``FOR UPDATE``, so its sessions
begin with ``BEGIN IMMEDIATE`` (the write lock is taken at the first statement).
"""

from __future__ import annotations

import sqlite3

import psycopg
from sqlalchemy import create_engine, text

from stylequeue.shared.db import session_scope
from stylequeue.shared.models import Job
from tests.factories import make_job


def _other_writer_is_blocked(url: str, job_id: str) -> bool:
    """Try to change the row from another connection that will not wait: True if refused."""
    if url.startswith("sqlite"):
        conn = sqlite3.connect(url.split("///", 1)[1], timeout=0.2, isolation_level=None)
        try:
            conn.execute("UPDATE jobs SET attempts = attempts + 1 WHERE id = ?", (job_id,))
        except sqlite3.OperationalError as exc:
            assert "locked" in str(exc)
            return True
        finally:
            conn.close()
        return False
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            conn.execute(text("SET lock_timeout = '200ms'"))
            conn.execute(
                text("UPDATE jobs SET attempts = attempts + 1 WHERE id = :id"), {"id": job_id}
            )
            conn.commit()
    except Exception as exc:  # sqlalchemy wraps the driver's error
        assert isinstance(exc.__cause__ or exc.orig, psycopg.errors.LockNotAvailable), exc  # type: ignore[attr-defined]
        return True
    finally:
        engine.dispose()
    return False


def test_a_row_read_for_update_cannot_be_changed_before_its_reader_commits(settings) -> None:  # type: ignore[no-untyped-def]
    job = make_job(settings)
    with session_scope(settings.database_url) as session:
        row = session.get(Job, job.id, with_for_update=True)
        assert row is not None and row.attempts == 0
        assert _other_writer_is_blocked(settings.database_url, job.id)
        row.attempts = 5  # the reader's check still holds when it writes
    assert not _other_writer_is_blocked(settings.database_url, job.id)  # released at commit
    with session_scope(settings.database_url) as session:
        row = session.get(Job, job.id)
        assert row is not None and row.attempts == 6


def test_sqlite_readers_outside_a_session_are_not_blocked(make_settings, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """WAL: a plain reader (another process's connection) still reads while a session holds
    the write lock, so the pages keep answering while a worker writes."""
    from stylequeue.shared.migrate import upgrade

    url = f"sqlite:///{tmp_path / 'readers.db'}"
    upgrade(url)
    settings = make_settings(database_url=url)
    job = make_job(settings)
    with session_scope(settings.database_url) as session:
        session.get(Job, job.id, with_for_update=True)
        conn = sqlite3.connect(settings.database_url.split("///", 1)[1], timeout=0.2)
        try:
            assert conn.execute("SELECT status FROM jobs WHERE id = ?", (job.id,)).fetchone()
        finally:
            conn.close()
