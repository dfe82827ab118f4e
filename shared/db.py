"""Database engine and sessions (SQLAlchemy 2), one engine per URL per process."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine.interfaces import DBAPIConnection, DBAPICursor, ExecutionContext
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import ConnectionPoolEntry

_lock = threading.Lock()
_SQLITE_BEGUN = "stylequeue_sqlite_begun"  # in Connection.info: False until our BEGIN ran
_WRITES = frozenset({"INSERT", "UPDATE", "DELETE", "REPLACE", "CREATE", "DROP", "ALTER"})
_makers: dict[str, sessionmaker[Session]] = {}


def make_engine(url: str) -> Engine:
    """An engine tuned for the backend: SQLite gets WAL and a busy timeout, since web and
    worker processes write to the same file.

    SQLite ignores ``SELECT ... FOR UPDATE``, and Python's driver starts a transaction only
    at the first write, so a row read, checked and then written (the runner's fence, the
    sweeper, cancel) could change in between. So we begin transactions ourselves, as the
    driver did but stricter: ``BEGIN IMMEDIATE`` (SQLite's write lock) before a
    transaction's first write *or* its first read ``with_for_update``; plain reads stay
    outside any transaction and never wait (WAL).
    """
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: DBAPIConnection, _record: ConnectionPoolEntry) -> None:
            dbapi_conn.isolation_level = None  # we say BEGIN ourselves (below)
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        @event.listens_for(engine, "begin")
        def _defer_begin(conn: Connection) -> None:
            conn.info[_SQLITE_BEGUN] = False  # BEGIN at the first write or locking read

        @event.listens_for(engine, "before_cursor_execute")
        def _begin_before_writing(
            conn: Connection,
            cursor: DBAPICursor,
            statement: str,
            _parameters: object,
            context: ExecutionContext | None,
            _executemany: bool,
        ) -> None:
            if conn.info.get(_SQLITE_BEGUN, True) or not _takes_the_write_lock(statement, context):
                return
            cursor.execute("BEGIN IMMEDIATE")
            conn.info[_SQLITE_BEGUN] = True

        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=5)


def _takes_the_write_lock(statement: str, context: ExecutionContext | None) -> bool:
    """A write, or a SELECT compiled from ``with_for_update()`` (whose FOR UPDATE SQLite's
    dialect leaves out of the SQL)."""
    words = statement.lstrip().split(None, 1)
    if words and words[0].upper() in _WRITES:
        return True
    compiled = getattr(context, "compiled", None)
    return getattr(getattr(compiled, "statement", None), "_for_update_arg", None) is not None


def get_sessionmaker(url: str) -> sessionmaker[Session]:
    """The process's session factory for ``url`` (engine created on first use)."""
    with _lock:
        maker = _makers.get(url)
        if maker is None:
            maker = _makers[url] = sessionmaker(bind=make_engine(url), expire_on_commit=False)
        return maker


def get_engine(url: str) -> Engine:
    engine = get_sessionmaker(url).kw["bind"]
    assert isinstance(engine, Engine)
    return engine


@contextmanager
def session_scope(url: str) -> Iterator[Session]:
    """A session that commits on success and rolls back on error."""
    session = get_sessionmaker(url)()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def dispose_all(close: bool = False) -> None:
    """Forget pooled connections: after a fork (the child must not share sockets, so they are
    dropped, not closed), or with ``close=True`` where this process owns them (tests)."""
    with _lock:
        for maker in _makers.values():
            maker.kw["bind"].dispose(close=close)
        _makers.clear()
