"""Every Redis key name stylequeue uses, in one place (as rq's ``keys.py``).

Other modules import these; none spells ``stylequeue:`` itself (a test checks). The Celery
broker's own keys (the ``style`` queue lists, kombu bindings) are kombu's, not listed here.
"""

from __future__ import annotations

NAMESPACE = "stylequeue:"

# ---- per job -------------------------------------------------------------------------------


def stream_key(job_id: str) -> str:
    """The job's progress stream (one entry per iteration; ``shared.progress``)."""
    return f"{NAMESPACE}progress:{job_id}"


def tiles_key(job_id: str) -> str:
    """The job's progress within an iteration, for jobs painted in tiles (a short stream:
    one entry per tile; ``shared.tile_progress``)."""
    return f"{NAMESPACE}tiles:{job_id}"


def cancel_key(job_id: str) -> str:
    """The job's cancel flag, read by its runner's stream writer a few times a second."""
    return f"{NAMESPACE}cancel:{job_id}"


def lock_key(job_id: str) -> str:
    """The job's runner lock; its value is the holder and fencing token (``shared.locks``)."""
    return f"{NAMESPACE}lock:job:{job_id}"


# ---- per owner -----------------------------------------------------------------------------


def top_up_lock_key(owner: str) -> str:
    """Serialises the sends of one owner's jobs, so the per-owner bound holds
    (``shared.jobs.top_up_owner``)."""
    return f"{NAMESPACE}lock:top-up:{owner}"


# ---- process-wide --------------------------------------------------------------------------

SWEEP_LOCK_KEY = f"{NAMESPACE}lock:sweep"  # one sweeper pass at a time
_WORKER = f"{NAMESPACE}worker:"


def worker_key(name: str) -> str:
    """A live worker's announcement (``shared.fleet``)."""
    return _WORKER + name


WORKER_PATTERN = _WORKER + "*"  # SCAN match for all of them

# ---- rate limits (web/limits.py) ------------------------------------------------------------

# Flask-Limiter's storage (the ``limits`` package) puts its keys under this prefix and a
# colon: ``stylequeue:rate:LIMITS:LIMITER/<client address>/<scope>/...``.
RATE_LIMIT_PREFIX = f"{NAMESPACE}rate"
