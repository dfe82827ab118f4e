"""Reading the losses one step behind (``read_behind``, on by default where the backend runs
asynchronously, a GPU): step k + 1 is queued before step k's losses are read, and nothing a
caller sees changes: the same reports in the same order, the same best image, snapshots,
checkpoints and stops."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from engine_samples import FAST

from stylequeue.worker.engine import EngineState, IterationReport, step_tf, transfer

COMPARED = ("iteration", "loss", "content", "style", "tv", "is_best")


def _run(content: Any, style: Any, params: Any, **kwargs: Any) -> tuple[Any, list[Any]]:
    seen: list[tuple[Any, ...]] = []

    def on_iteration(report: IterationReport) -> None:
        snapshot = report.snapshot
        seen.append((
            *(getattr(report, name) for name in COMPARED),
            None if snapshot is None else snapshot.tobytes(),
        ))  # fmt: skip

    result = transfer(content, [style], params, weights="random", on_iteration=on_iteration,
                      **kwargs)  # fmt: skip
    return result, seen


@pytest.fixture
def steps_called(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many steps the loop has called so far (the compiled step, counted)."""
    calls: list[int] = []
    real = step_tf.get_step

    def counting(*args: Any, **kwargs: Any) -> Any:
        step = real(*args, **kwargs)

        def counted(*a: Any) -> Any:
            calls.append(1)
            return step(*a)

        return counted

    monkeypatch.setattr(step_tf, "get_step", counting)
    return calls


@pytest.mark.parametrize("behind", [False, True])
def test_read_behind_queues_the_next_step_before_reading_the_losses(
    content: Any, style: Any, steps_called: list[int], behind: bool
) -> None:
    params = replace(FAST, iterations=5)
    queued_at_report: list[int] = []
    transfer(content, [style], params, weights="random", read_behind=behind,
             on_iteration=lambda r: queued_at_report.append(len(steps_called)))  # fmt: skip
    if behind:  # step k + 1 was already called when iteration k was reported (but the last)
        assert queued_at_report == [2, 3, 4, 5, 5]
    else:
        assert queued_at_report == [1, 2, 3, 4, 5]


@pytest.mark.parametrize(
    "how", [{}, {"optimizer": "lbfgs"}, {"scales": 2}], ids=["adam", "lbfgs", "two-scales"]
)
def test_read_behind_reports_exactly_what_reading_at_once_does(
    content: Any, style: Any, how: dict[str, Any]
) -> None:
    params = replace(FAST, iterations=7, snapshot_every=2, **how)
    now, now_seen = _run(content, style, params, read_behind=False)
    behind, behind_seen = _run(content, style, params, read_behind=True)
    assert behind_seen == now_seen and len(now_seen) == 7
    assert [s[0] for s in behind_seen] == list(range(1, 8))
    assert behind.image.tobytes() == now.image.tobytes()
    assert (behind.best_iteration, behind.best_loss) == (now.best_iteration, now.best_loss)
    untimed = [{**h, "elapsed": 0} for h in now.history]
    assert [{**h, "elapsed": 0} for h in behind.history] == untimed
    assert behind.iterations_done == now.iterations_done == 7


@pytest.mark.parametrize("k", [1, 3])
def test_a_stop_after_k_drops_the_step_already_queued(
    content: Any, style: Any, steps_called: list[int], k: int
) -> None:
    """should_stop says yes after iteration k's callback: the run ends at k as it does
    when reading at once, though step k + 1 had been called: it is dropped, unreported."""
    params = replace(FAST, iterations=20)
    results = {}
    for behind in (False, True):
        steps_called.clear()
        seen: list[int] = []
        result = transfer(
            content, [style], params, weights="random", read_behind=behind,
            on_iteration=lambda r, seen=seen: seen.append(r.iteration),
            should_stop=lambda seen=seen: len(seen) >= k,
        )  # fmt: skip
        assert result.stopped and result.iterations_done == k
        assert seen == list(range(1, k + 1)) and len(result.history) == k
        assert len(steps_called) == (k + 1 if behind else k)
        results[behind] = result
    assert results[True].image.tobytes() == results[False].image.tobytes()
    assert results[True].best_iteration == results[False].best_iteration


def test_a_checkpoint_read_behind_holds_the_state_after_its_own_iteration(
    content: Any, style: Any
) -> None:
    """The state offered after iteration k is step k's, not the step queued after it."""
    params = replace(FAST, iterations=6)
    states: dict[bool, list[EngineState]] = {}
    for behind in (False, True):
        saved: list[EngineState] = []
        transfer(content, [style], params, weights="random", read_behind=behind,
                 checkpoint_due=lambda k: k in (2, 4), on_checkpoint=saved.append)  # fmt: skip
        states[behind] = saved
    assert [s.iteration for s in states[True]] == [2, 4]
    for a, b in zip(states[True], states[False], strict=True):
        assert a.iteration == b.iteration
        for name in ("image", "adam_m", "adam_v", "best_image"):
            assert getattr(a, name).tobytes() == getattr(b, name).tobytes(), name
        assert (a.best_loss, a.best_iteration) == (b.best_loss, b.best_iteration)
