"""Checkpoint and resume in the engine: a run interrupted at any iteration, resumed from its
state (saved to bytes and read back), ends exactly as the undisturbed run."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import pytest
from engine_samples import FAST, OVERSHOOT

from stylequeue.worker.engine import EngineState, IterationReport, StateError, transfer

# OVERSHOOT's loss falls, then rises again: the best image is one from before the later
# checkpoints, so it must travel in the state.
LBFGS = replace(FAST, optimizer="lbfgs")
# two scales of four iterations: the stops below fall on the boundary (4) and either side
SCALED = replace(FAST, scales=2)
LBFGS_SCALED = replace(LBFGS, scales=2)
COMPARED = ("iteration", "loss", "content", "style", "tv")


def _run(content: Any, style: Any, params: Any, **kwargs: Any) -> tuple[Any, list[IterationReport]]:
    reports: list[IterationReport] = []
    result = transfer(
        content, [style], params, weights="random", on_iteration=reports.append, **kwargs
    )
    return result, reports


def _interrupted(
    content: Any, style: Any, params: Any, stops: tuple[int, ...]
) -> tuple[Any, list[IterationReport], list[int]]:
    """Run, stopping right after a checkpoint at each iteration of ``stops`` and resuming
    from that state (through its bytes), as a job whose worker died would."""
    reports: list[IterationReport] = []
    state: EngineState | None = None
    resumed_at: list[int] = []
    for stop in (*stops, None):
        saved: list[EngineState] = []
        result = transfer(
            content, [style], params, weights="random", on_iteration=reports.append,
            resume=state, checkpoint_due=lambda k, stop=stop: k == stop,
            on_checkpoint=saved.append, should_stop=lambda saved=saved: bool(saved),
        )  # fmt: skip
        if stop is None:
            return result, reports, resumed_at
        assert result.stopped and [s.iteration for s in saved] == [stop]
        state = EngineState.from_bytes(saved[0].to_bytes())
        resumed_at.append(state.iteration)
    raise AssertionError("unreachable")


@pytest.mark.parametrize(
    "params",
    [FAST, OVERSHOOT, LBFGS, SCALED, LBFGS_SCALED],
    ids=["falling", "overshoot", "lbfgs", "scales", "lbfgs-scales"],
)
@pytest.mark.parametrize("stops", [(3,), (1, 2, 4), (4, 5)])
def test_resumed_run_is_bit_identical_to_the_undisturbed_one(
    content: Any, style: Any, params: Any, stops: tuple[int, ...]
) -> None:
    params = replace(params, snapshot_every=1)
    whole, whole_reports = _run(content, style, params)
    result, reports, resumed_at = _interrupted(content, style, params, stops)
    assert resumed_at == list(stops)
    assert result.image.tobytes() == whole.image.tobytes()
    assert (result.best_iteration, result.best_loss) == (whole.best_iteration, whole.best_loss)
    assert result.iterations_done == params.iterations and not result.stopped
    # every iteration's losses and snapshot are the undisturbed run's, bit for bit
    assert [r.iteration for r in reports] == [r.iteration for r in whole_reports]
    for got, want in zip(reports, whole_reports, strict=True):
        assert [getattr(got, k) for k in COMPARED] == [getattr(want, k) for k in COMPARED]
        assert got.snapshot is not None and want.snapshot is not None
        assert got.snapshot.tobytes() == want.snapshot.tobytes(), got.iteration
    # the last call's own history starts after its state; times continue from the state's
    assert result.history[0]["iteration"] == stops[-1] + 1
    assert reports[stops[-1]].elapsed >= reports[stops[-1] - 1].elapsed


def test_the_best_image_travels_in_the_state(content: Any, style: Any) -> None:
    """The overshooting run's best iteration lies before the checkpoint: the result still is
    the image measured there (it came from the state, not from the resumed iterations)."""
    whole, reports = _run(content, style, OVERSHOOT)
    best = whole.best_iteration
    assert 1 < best < OVERSHOOT.iterations - 1, [r.loss for r in reports]
    result, _, _ = _interrupted(content, style, OVERSHOOT, (best + 1,))
    assert result.best_iteration == best
    assert result.image.tobytes() == whole.image.tobytes()


def test_state_round_trips_losslessly_and_refuses_other_bytes(content: Any, style: Any) -> None:
    saved: list[EngineState] = []
    transfer(
        content, [style], FAST, weights="random", checkpoint_due=lambda k: k == 4,
        on_checkpoint=saved.append,
    )  # fmt: skip
    (state,) = saved
    back = EngineState.from_bytes(state.to_bytes())
    for name in ("image", "adam_m", "adam_v", "best_image"):
        got, want = getattr(back, name), getattr(state, name)
        assert got.dtype == np.float32 and got.tobytes() == want.tobytes(), name
    assert (back.iteration, back.best_loss, back.best_iteration, back.elapsed) == (
        state.iteration, state.best_loss, state.best_iteration, state.elapsed,
    )  # fmt: skip
    assert back.iteration == 4 and not np.array_equal(back.adam_m, 0)
    data = state.to_bytes()
    for bad in (b"", b"not a state", data[: len(data) // 2]):
        with pytest.raises(StateError):
            EngineState.from_bytes(bad)


def test_a_state_that_does_not_fit_is_refused(content: Any, style: Any) -> None:
    saved: list[EngineState] = []
    transfer(
        content, [style], FAST, weights="random", checkpoint_due=lambda k: k == 2,
        on_checkpoint=saved.append,
    )  # fmt: skip
    smaller = replace(FAST, max_size=32)
    with pytest.raises(StateError):
        transfer(content, [style], smaller, weights="random", resume=saved[0])
    with pytest.raises(StateError):  # at or past the last iteration
        transfer(content, [style], replace(FAST, iterations=2), weights="random", resume=saved[0])


def test_no_checkpoint_is_asked_on_the_last_iteration(content: Any, style: Any) -> None:
    asked: list[int] = []

    def due(k: int) -> bool:
        asked.append(k)
        return True

    saved: list[EngineState] = []
    transfer(
        content, [style], FAST, weights="random", checkpoint_due=due, on_checkpoint=saved.append
    )
    assert asked == list(range(1, FAST.iterations))
    assert [s.iteration for s in saved] == asked
