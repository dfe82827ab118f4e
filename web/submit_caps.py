"""The caps a submit must fit (``shared.quota``) as the web applies them: made from the
settings, told to the client as HTTP errors.

Active jobs (the owner's, all browser sessions', one address's browser sessions') answer
429 with ``Retry-After``: waiting frees room. The storage quota answers 403: only deleting
jobs frees it.
"""

from __future__ import annotations

from stylequeue.shared.quota import CapReached, Caps, is_anonymous
from stylequeue.shared.settings import Settings
from stylequeue.web.errors import ApiError
from stylequeue.web.limits import client_key

MB = 1024 * 1024


def caps(settings: Settings) -> Caps:
    return Caps(
        max_active=settings.limits.max_active_jobs,
        anonymous_max_active=settings.anonymous_max_active_jobs,
        address_max_active=settings.max_active_jobs_per_address,
        quota_bytes=settings.storage_quota_bytes,
    )


def client_key_for(owner: str) -> str | None:
    """What the job row keeps of the caller's address: only for browser sessions (an API
    token is an owner of its own, held to its own caps)."""
    return client_key() if is_anonymous(owner) else None


def _mb(n: int) -> str:
    return f"{n / MB:.1f} MB"


def cap_error(exc: CapReached, incoming_bytes: int = 0) -> ApiError:
    """The HTTP answer for a cap a submit would pass."""
    if exc.kind == "owner_active":
        return ApiError(
            429,
            "too_many_active_jobs",
            f"you have {exc.used} jobs queued or running (limit {exc.limit}); "
            "wait for one to finish or cancel one",
            headers={"Retry-After": "30"},
        )
    if exc.kind == "anonymous_active":
        return ApiError(
            429,
            "anonymous_capacity",
            f"the server is busy with other visitors' jobs ({exc.used} queued or running, "
            f"limit {exc.limit}); try again in a few minutes, or use an API token",
            headers={"Retry-After": "60"},
        )
    if exc.kind == "address_active":
        return ApiError(
            429,
            "address_capacity",
            f"your network address already has {exc.used} jobs queued or running (limit "
            f"{exc.limit}); wait for one to finish or cancel one",
            headers={"Retry-After": "30"},
        )
    return ApiError(
        403,
        "storage_quota_exceeded",
        f"your jobs keep {_mb(exc.used)} of images (quota {_mb(exc.limit)}) and this one needs "
        f"{_mb(incoming_bytes)} more; delete jobs you no longer need",
    )
