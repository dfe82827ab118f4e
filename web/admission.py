"""Admission by memory: a job is taken only if a live worker can paint it.

Each worker announces its memory budget, precision and device in the fleet registry
(``worker.budget``, ``shared.fleet``); the memory model (``shared.memory``) says whether a
picture of this size fits one of them, untiled or in tiles. A job that fits none is a 422
naming ``max_size`` and the largest size this picture could be painted at. ``/api/v1/config``
and the form show the largest size the fleet can paint (a square picture, the worst case).

When no live worker announces a budget (none online, or Redis cannot be read), nothing is
checked here: the server's ``STYLEQUEUE_MAX_SIZE`` still applies, and the job waits for a
worker as any job does.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import redis

from stylequeue.shared.fleet import list_workers
from stylequeue.shared.memory import (
    estimate_memory,
    fits,
    format_bytes,
    largest_size,
    largest_untiled_size,
    output_shape,
)
from stylequeue.shared.params import PRECISIONS, TransferParams
from stylequeue.shared.settings import Limits
from stylequeue.web.errors import ApiError
from stylequeue.web.extensions import Services

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WorkerMemory:
    budget: int
    precision: str
    device: str  # "cpu" | "gpu": which of the model's constants apply


def worker_memories(workers: list[dict[str, Any]]) -> list[WorkerMemory]:
    """The live workers that announce a budget (older ones do not: they are left out)."""
    out = []
    for w in workers:
        budget, precision = w.get("memory_budget"), w.get("precision")
        if isinstance(budget, int) and budget > 0 and precision in PRECISIONS:
            device = "gpu" if w.get("device") == "GPU" else "cpu"
            out.append(WorkerMemory(budget, str(precision), device))
    return out


def _fleet(svc: Services) -> list[WorkerMemory]:
    try:
        return worker_memories(list_workers(svc.redis))
    except redis.RedisError as exc:
        log.warning("the worker registry cannot be read (%s); memory is not checked", exc)
        return []


def _fits(size: tuple[int, int], params: TransferParams, w: WorkerMemory) -> bool:
    return fits(size, params, w.budget, w.precision, device=w.device)


def largest_for(
    memories: list[WorkerMemory], params: TransferParams, aspect: float, cap: int
) -> int:
    """The largest longest side (at most ``cap``) some worker can paint at ``aspect``."""
    return max(
        (
            largest_size(m.budget, params, m.precision, device=m.device, aspect=aspect, cap=cap)
            for m in memories
        ),
        default=0,
    )


def check_fits(svc: Services, params: TransferParams, width: int, height: int) -> None:
    """422 on ``max_size`` unless a live worker can paint this content at these params."""
    memories = _fleet(svc)
    if not memories:
        return
    size = output_shape(width, height, params.max_size)
    if any(_fits(size, params, m) for m in memories):
        return
    aspect = min(width, height) / max(width, height)
    largest = largest_for(memories, params, aspect, params.max_size)
    need = min(estimate_memory(size, params, m.precision, device=m.device) for m in memories)
    most = max(m.budget for m in memories)
    if largest:
        advice = f"the largest this picture fits at is max_size {largest}"
    else:
        advice = "no size fits"
    raise ApiError(
        422,
        "too_large_for_workers",
        f"no worker online can hold a {size[1]}x{size[0]} px picture (about "
        f"{format_bytes(need)} untiled; the largest budget is {format_bytes(most)}, even in "
        f"tiles it does not fit); {advice}",
        field="max_size",
    )


def fleet_capacity(svc: Services, limits: Limits) -> dict[str, Any]:
    """What the live workers can paint, for ``/api/v1/config`` and the form: the largest
    side of a square picture at the default parameters, untiled and at all (tiled), each at
    most the server's ``max_size``; None for both when no worker announces a budget."""
    memories = _fleet(svc)
    if not memories:
        return {"max_size": None, "max_size_untiled": None, "workers": 0}
    params = TransferParams()
    cap = limits.max_size
    untiled = max(
        largest_untiled_size(m.budget, params, m.precision, device=m.device, cap=cap)
        for m in memories
    )
    return {
        "max_size": largest_for(memories, params, 1.0, cap),
        "max_size_untiled": untiled,
        "workers": len(memories),
    }
