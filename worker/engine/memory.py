"""The engine's side of the memory model: which way a job runs within a budget.

The model itself (``estimate_memory``, its fitted constants, tiles, halos) is
:mod:`stylequeue.shared.memory`, pure Python, so the web admits jobs by the same figures
without TensorFlow; it is re-exported here. This module adds what needs the engine: the
device the job runs on, the output size of a content image, and the hand-off to
:mod:`worker.engine.tiling`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from stylequeue.shared.memory import (
    BudgetError,
    Plan,
    estimate_memory,
    estimate_tiled_memory,
    output_shape,
    plan,
)
from stylequeue.shared.params import TransferParams
from stylequeue.worker.engine.hardware import device_kind
from stylequeue.worker.engine.state import EngineState

__all__ = [
    "BudgetError",
    "Plan",
    "estimate_memory",
    "estimate_tiled_memory",
    "plan_job",
    "run_tiled",
]


def plan_job(
    content: np.ndarray, params: TransferParams, budget: int | None, tile: int | None = None
) -> Plan:
    """How ``transfer`` runs this content: untiled when it fits ``budget`` (or there is
    none), else in the largest tiles that fit (``tile`` forces a core size). Raises
    :class:`BudgetError` (nothing computed yet) when no tiling fits."""
    height, width = int(content.shape[0]), int(content.shape[1])
    size = output_shape(width, height, params.max_size)
    return plan(size, params, budget, params.precision, device=device_kind(), core=tile)


def run_tiled(
    content: np.ndarray,
    styles: Sequence[np.ndarray],
    params: TransferParams,
    layout: Plan,
    *,
    weights: str,
    on_iteration: Callable[[Any], None] | None,
    on_tile: Callable[[Any], None] | None,
    should_stop: Callable[[], bool] | None,
    resume: EngineState | None,
    checkpoint_due: Callable[[int], bool] | None,
    on_checkpoint: Callable[[EngineState], None] | None,
) -> Any:
    from stylequeue.worker.engine.tiling import transfer_tiled

    assert layout.core is not None
    return transfer_tiled(
        content, styles, params, weights=weights, tile=layout.core,
        on_iteration=on_iteration, on_tile=on_tile, should_stop=should_stop, resume=resume,
        checkpoint_due=checkpoint_due, on_checkpoint=on_checkpoint,
    )  # fmt: skip
