"""The key that signs browser sessions when ``STYLEQUEUE_SECRET_KEY`` is not set.

A browser's jobs belong to the owner id in its signed session cookie, so every web process
must sign with the same key, or a session made by one gunicorn worker is refused by the
next (and its jobs vanish from that browser). A key invented per process did exactly that.
Instead the first process writes a random key to ``<STYLEQUEUE_VAR_DIR>/secret_key`` (mode
0600) and every process on the host reads the same file, across restarts too. The file is
written whole and then linked into place, so two processes starting at once never read a
half-written key and never both win. A var dir that cannot hold it stops the start with a
message naming the setting: sessions are never lost silently.

Several web hosts do not share a var dir: set ``STYLEQUEUE_SECRET_KEY`` there (compose
requires it).
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
from pathlib import Path

log = logging.getLogger(__name__)

FILE_NAME = "secret_key"
MIN_LENGTH = 32


class SecretKeyUnavailable(RuntimeError):
    """No key is set and none can be kept in the var dir."""


def shared_secret_key(var_dir: str | os.PathLike[str]) -> str:
    """The key kept in ``var_dir``, created on first use; the same for every process."""
    path = Path(var_dir) / FILE_NAME
    try:
        key = _read(path)
        if key is None:
            path.parent.mkdir(parents=True, exist_ok=True)
            key = _create(path)
    except OSError as exc:
        raise SecretKeyUnavailable(
            f"STYLEQUEUE_SECRET_KEY is not set and no shared key can be kept at {path} "
            f"({exc.strerror or exc}): set STYLEQUEUE_SECRET_KEY, so that every web process "
            "signs sessions with the same key"
        ) from exc
    log.warning(
        "STYLEQUEUE_SECRET_KEY is not set: browser sessions are signed with the key kept in "
        "%s, shared by the web processes of this host only; set STYLEQUEUE_SECRET_KEY when "
        "several hosts serve the web",
        path,
    )
    return key


def _read(path: Path) -> str | None:
    try:
        key = path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        return None
    if len(key) < MIN_LENGTH:
        raise OSError(f"{path} holds no usable key (under {MIN_LENGTH} characters)")
    return key


def _create(path: Path) -> str:
    """Write a new key beside ``path`` and link it into place; if another process got
    there first, read theirs."""
    tmp = path.with_name(f".{FILE_NAME}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as out:
            out.write(secrets.token_hex(32) + "\n")
            out.flush()
            os.fsync(out.fileno())
        with contextlib.suppress(FileExistsError):  # another process won: read theirs
            os.link(tmp, path)  # atomic, and fails if the file exists: one writer wins
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    key = _read(path)
    if key is None:
        raise OSError(f"{path} vanished as it was written")
    return key
