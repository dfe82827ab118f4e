"""Reading the losses in groups, and one step behind (``read_behind``, on by default where
the backend runs asynchronously, a GPU): steps are dispatched before earlier steps' losses
are read, and nothing a caller sees changes: the same reports in the same order, the same
best image, snapshots, checkpoints and stops."""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import pytest
from engine_samples import FAST

from stylequeue.worker.engine import EngineState, IterationReport, core, step_tf, transfer

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


@pytest.fixture
def groups_of_3(monkeypatch: pytest.MonkeyPatch) -> None:
    """Groups close only when full: three steps each (the time rule never fires)."""
    monkeypatch.setattr(core, "GROUP_SECONDS", math.inf)
    monkeypatch.setattr(core, "GROUP_MAX", 3)


@pytest.fixture
def at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every group closes at once: each step's losses read as soon as the rule allows."""
    monkeypatch.setattr(core, "GROUP_SECONDS", 0.0)


@pytest.mark.usefixtures("at_once")
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


@pytest.mark.usefixtures("groups_of_3")
@pytest.mark.parametrize("behind", [False, True])
def test_losses_are_read_a_group_at_a_time(
    content: Any, style: Any, steps_called: list[int], behind: bool
) -> None:
    """Iterations 1-3 are reported together once their group is full, the rest at the end.
    Reading behind (an asynchronous device) reads one step at a time, step k + 1 queued:
    a group would leave the device one step while the host finished the others."""
    params = replace(FAST, iterations=5)
    queued_at_report: list[int] = []
    transfer(content, [style], params, weights="random", read_behind=behind,
             on_iteration=lambda r: queued_at_report.append(len(steps_called)))  # fmt: skip
    if behind:
        assert queued_at_report == [2, 3, 4, 5, 5]
    else:
        assert queued_at_report == [3, 3, 3, 5, 5]


def test_a_group_holds_no_more_carries_than_its_byte_budget(
    content: Any, style: Any, steps_called: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A large image makes small groups: the unread steps' carries stay within the budget
    (here two Adam carries: the image and its two moments, float32)."""
    monkeypatch.setattr(core, "GROUP_SECONDS", math.inf)
    params = replace(FAST, iterations=5)
    h, w = core._prepare(content, [style], params, "random").content.shape[:2]
    monkeypatch.setattr(core, "GROUP_BYTES", 2 * 3 * (h * w * 3 * 4))
    queued_at_report: list[int] = []
    transfer(content, [style], params, weights="random", read_behind=False,
             on_iteration=lambda r: queued_at_report.append(len(steps_called)))  # fmt: skip
    assert queued_at_report == [2, 2, 4, 4, 5]


def _grouping(monkeypatch: pytest.MonkeyPatch, how: str) -> bool:
    """Set the group rule for ``how`` (``at-once``, ``behind``, ``groups``); returns
    ``read_behind``."""
    monkeypatch.setattr(core, "GROUP_SECONDS", math.inf if how == "groups" else 0.0)
    monkeypatch.setattr(core, "GROUP_MAX", 3)
    return how == "behind"


@pytest.mark.parametrize("reading", ["behind", "groups"])
@pytest.mark.parametrize(
    "how", [{}, {"optimizer": "lbfgs"}, {"scales": 2}], ids=["adam", "lbfgs", "two-scales"]
)
def test_reading_later_reports_exactly_what_reading_at_once_does(
    content: Any, style: Any, how: dict[str, Any], reading: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    params = replace(FAST, iterations=7, snapshot_every=2, **how)
    now, now_seen = _run(content, style, params, read_behind=_grouping(monkeypatch, "at-once"))
    later, later_seen = _run(content, style, params, read_behind=_grouping(monkeypatch, reading))
    assert later_seen == now_seen and len(now_seen) == 7
    assert [s[0] for s in later_seen] == list(range(1, 8))
    assert later.image.tobytes() == now.image.tobytes()
    assert (later.best_iteration, later.best_loss) == (now.best_iteration, now.best_loss)
    untimed = [{**h, "elapsed": 0} for h in now.history]
    assert [{**h, "elapsed": 0} for h in later.history] == untimed
    assert later.iterations_done == now.iterations_done == 7
    assert [h["elapsed"] for h in later.history] == sorted(h["elapsed"] for h in later.history)


@pytest.mark.parametrize("k", [1, 3, 4])
def test_a_stop_after_k_drops_the_steps_already_dispatched(
    content: Any, style: Any, steps_called: list[int], k: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """should_stop says yes after iteration k's callback: the run ends at k as it does
    when reading at once, though later steps had been called: they are dropped, unreported
    (behind: step k + 1; in groups of three: the rest of k's group)."""
    params = replace(FAST, iterations=20)
    called = {"at-once": k, "behind": k + 1, "groups": 3 * math.ceil(k / 3)}
    results = {}
    for reading, expected_calls in called.items():
        behind = _grouping(monkeypatch, reading)
        steps_called.clear()
        seen: list[int] = []
        result = transfer(
            content, [style], params, weights="random", read_behind=behind,
            on_iteration=lambda r, seen=seen: seen.append(r.iteration),
            should_stop=lambda seen=seen: len(seen) >= k,
        )  # fmt: skip
        assert result.stopped and result.iterations_done == k
        assert seen == list(range(1, k + 1)) and len(result.history) == k
        assert len(steps_called) == expected_calls, reading
        results[reading] = result
    for reading in ("behind", "groups"):
        assert results[reading].image.tobytes() == results["at-once"].image.tobytes()
        assert results[reading].best_iteration == results["at-once"].best_iteration


STATE_FIELDS = {
    "adam": ("image", "adam_m", "adam_v", "best_image"),
    "lbfgs": ("image", "best_image"),
}
LBFGS_FIELDS = ("losses", "grad", "v", "s_hist", "y_hist", "rho")


@pytest.mark.parametrize("optimizer", ["adam", "lbfgs"])
def test_a_checkpoint_read_later_holds_the_state_after_its_own_iteration(
    content: Any, style: Any, monkeypatch: pytest.MonkeyPatch, optimizer: str
) -> None:
    """The state offered after iteration k is step k's, not that of a step dispatched
    after it (in groups of three, iterations 2 and 4 are inside groups)."""
    params = replace(FAST, iterations=6, optimizer=optimizer)
    states: dict[str, list[EngineState]] = {}
    for reading in ("at-once", "behind", "groups"):
        behind = _grouping(monkeypatch, reading)
        saved: list[EngineState] = []
        transfer(content, [style], params, weights="random", read_behind=behind,
                 checkpoint_due=lambda k: k in (2, 4), on_checkpoint=saved.append)  # fmt: skip
        states[reading] = saved
    for reading in ("behind", "groups"):
        assert [s.iteration for s in states[reading]] == [2, 4]
        for a, b in zip(states[reading], states["at-once"], strict=True):
            assert a.iteration == b.iteration
            for name in STATE_FIELDS[optimizer]:
                assert getattr(a, name).tobytes() == getattr(b, name).tobytes(), name
            if optimizer == "lbfgs":
                assert a.lbfgs is not None and b.lbfgs is not None
                for name in LBFGS_FIELDS:
                    assert getattr(a.lbfgs, name).tobytes() == getattr(b.lbfgs, name).tobytes()
                assert (a.lbfgs.count, a.lbfgs.head) == (b.lbfgs.count, b.lbfgs.head)
            assert (a.best_loss, a.best_iteration) == (b.best_loss, b.best_iteration)


@pytest.mark.usefixtures("groups_of_3")
def test_a_stop_in_the_second_scale_ends_there_as_reading_at_once_does(
    content: Any, style: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two scales of five iterations; a stop after iteration 7 (inside a group of the
    second scale): the same result as reading at once, with the second scale's best."""
    params = replace(FAST, iterations=10, scales=2)
    results = {}
    for reading in ("at-once", "groups"):
        _grouping(monkeypatch, reading)
        seen: list[int] = []
        results[reading] = transfer(
            content, [style], params, weights="random", read_behind=False,
            on_iteration=lambda r, seen=seen: seen.append(r.iteration),
            should_stop=lambda seen=seen: len(seen) >= 7,
        )  # fmt: skip
        assert seen == list(range(1, 8))
    now, later = results["at-once"], results["groups"]
    assert later.stopped and later.iterations_done == 7
    assert later.image.tobytes() == now.image.tobytes()
    assert (later.best_iteration, later.best_loss) == (now.best_iteration, now.best_loss)
    assert later.best_iteration >= 6  # the second scale's


@pytest.mark.usefixtures("groups_of_3")
def test_a_stop_asked_mid_group_is_acted_on_without_waiting_for_the_group(
    content: Any, style: Any, steps_called: list[int]
) -> None:
    """A cancel arriving while a group fills (the flag set once step 1 has run) stops the
    run after that step: the group is read at once, not after two more steps."""
    params = replace(FAST, iterations=20)
    result = transfer(content, [style], params, weights="random", read_behind=False,
                      should_stop=lambda: len(steps_called) >= 1)  # fmt: skip
    assert result.stopped and result.iterations_done == 1
    assert len(steps_called) == 1
