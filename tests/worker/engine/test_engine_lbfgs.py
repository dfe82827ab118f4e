"""L-BFGS in the engine: the two-loop recursion against the BFGS formula, monotone losses,
its state in a checkpoint, and coarse-to-fine scales.

Resuming L-BFGS and scaled runs bit for bit is tested with Adam's in test_engine_resume.py.
"""

from __future__ import annotations

import itertools
from dataclasses import replace
from typing import Any

import numpy as np
import pytest
from engine_samples import FAST, dots, smooth_image, stripes
from keras import ops

from stylequeue.shared.params import ParamError
from stylequeue.worker.engine import (
    EngineState,
    IterationReport,
    StateError,
    evaluate,
    lbfgs,
    scales,
    step_lbfgs_tf,
    transfer,
)

LBFGS = replace(FAST, optimizer="lbfgs", iterations=10)


# ---- the two-loop recursion -------------------------------------------------------------------


def _dense_inverse(pairs: list[tuple[np.ndarray, np.ndarray]], diag: np.ndarray) -> np.ndarray:
    """The L-BFGS inverse Hessian written out: BFGS updates of ``gamma * diag(diag)`` by the
    pairs, oldest first (Nocedal & Wright, (7.19)), gamma from the newest pair."""
    s_new, y_new = pairs[-1]
    h = np.diag(diag) * (s_new @ y_new) / (y_new @ (diag * y_new))
    eye = np.eye(len(diag))
    for s, y in pairs:
        rho = 1.0 / (s @ y)
        h = (eye - rho * np.outer(s, y)) @ h @ (eye - rho * np.outer(y, s)) + rho * np.outer(s, s)
    return h


@pytest.mark.parametrize("pushed", [1, 3, 5])  # 5 > m = 3: the ring has wrapped
def test_two_loop_is_the_bfgs_inverse_of_the_last_m_pairs(pushed: int) -> None:
    m, shape = 3, (1, 2, 2, 3)
    n = int(np.prod(shape))
    rng = np.random.default_rng(pushed)
    curvature = rng.uniform(0.5, 4.0, n)  # a convex quadratic's diagonal Hessian
    s_hist, y_hist, rho = np.zeros((m, *shape)), np.zeros((m, *shape)), np.zeros(m)
    pairs = []
    for k in range(pushed):  # as lbfgs.step stores them: slot k % m
        s = rng.standard_normal(n)
        y = curvature * s
        s_hist[k % m], y_hist[k % m], rho[k % m] = s.reshape(shape), y.reshape(shape), 1 / (s @ y)
        pairs.append((s, y))
    diag = rng.uniform(0.5, 2.0, n)
    grad = rng.standard_normal(n)

    def f32(a: np.ndarray) -> Any:
        return ops.convert_to_tensor(a.astype(np.float32))

    d = lbfgs.direction(
        f32(grad.reshape(shape)), f32(diag.reshape(shape)), f32(s_hist), f32(y_hist), f32(rho),
        ops.convert_to_tensor(min(pushed, m), "int32"), ops.convert_to_tensor(pushed % m, "int32"),
        ops.convert_to_tensor(np.float32(0.02)),
    )  # fmt: skip
    want = -_dense_inverse(pairs[-m:], diag) @ grad
    np.testing.assert_allclose(np.asarray(d).ravel(), want, rtol=2e-4, atol=2e-5)
    # the secant equation: the newest pair's y maps to its s
    s_new, y_new = pairs[-1]
    d_secant = lbfgs.direction(
        f32(y_new.reshape(shape)), f32(diag.reshape(shape)), f32(s_hist), f32(y_hist), f32(rho),
        ops.convert_to_tensor(min(pushed, m), "int32"), ops.convert_to_tensor(pushed % m, "int32"),
        ops.convert_to_tensor(np.float32(0.02)),
    )  # fmt: skip
    np.testing.assert_allclose(np.asarray(d_secant).ravel(), -s_new, rtol=2e-4, atol=2e-5)


def test_without_pairs_the_first_step_is_the_scaled_diagonal() -> None:
    shape = (1, 2, 2, 3)
    grad = np.linspace(-3, 3, 12, dtype=np.float32).reshape(shape)
    diag = np.full(shape, 0.5, np.float32)
    zeros = np.zeros((2, *shape), np.float32)
    d = lbfgs.direction(
        ops.convert_to_tensor(grad), ops.convert_to_tensor(diag), ops.convert_to_tensor(zeros),
        ops.convert_to_tensor(zeros), ops.convert_to_tensor(np.zeros(2, np.float32)),
        ops.convert_to_tensor(0, "int32"), ops.convert_to_tensor(0, "int32"),
        ops.convert_to_tensor(np.float32(0.02)),
    )  # fmt: skip
    np.testing.assert_allclose(np.asarray(d), -0.02 * 0.5 * grad, rtol=1e-6)


# ---- the engine -------------------------------------------------------------------------------


def _run(content: Any, style: Any, params: Any, **kw: Any) -> tuple[Any, list[IterationReport]]:
    reports: list[IterationReport] = []
    result = transfer(content, [style], params, weights="random", on_iteration=reports.append, **kw)
    return result, reports


def test_one_trace_serves_every_size_history_and_scale() -> None:
    """The whole L-BFGS iteration, line search included, is one compiled function traced
    once (plus the starting point's evaluation): a new size, history length, weight or
    scale reuses it, so nothing in a job's loop falls back to the host."""
    params = replace(
        LBFGS,
        content_layers=(("block3_conv1", 1.0),),  # layers no other test uses
        style_layers=(("block1_conv2", 1.0), ("block3_conv2", 0.5)),
        iterations=3,
    )
    traces = step_lbfgs_tf.trace_count()
    transfer(smooth_image(32, 40), [stripes(32, 32)], params, weights="random")
    assert step_lbfgs_tf.trace_count() == traces + 2  # evaluate and step
    transfer(
        smooth_image(48, 36, seed=3), [dots(40, 40)],
        replace(params, content_weight=5.0, lbfgs_history=4, scales=2, max_size=40),
        weights="random",
    )  # fmt: skip
    assert step_lbfgs_tf.trace_count() == traces + 2


@pytest.mark.parametrize(
    ("init", "learning_rate"),
    [("content", 0.02), ("noise", 0.02), ("content", 0.5)],
    ids=["content", "noise", "first-step-too-long"],
)
def test_lbfgs_lowers_the_loss_at_every_iteration(
    content: Any, style: Any, init: str, learning_rate: float
) -> None:
    """Each iteration ends on an image with a lower loss than the one before: the line
    search accepts only a sufficient decrease (a first step of 0.5 per pixel overshoots and
    is cut back). Each report is that new image's loss."""
    params = replace(LBFGS, init=init, learning_rate=learning_rate)
    result, reports = _run(content, style, params)
    losses = [r.loss for r in reports]
    assert [r.iteration for r in reports] == list(range(1, params.iterations + 1))
    assert all(b < a for a, b in itertools.pairwise(losses)), losses
    # the best is the last, and the result is the image that loss was measured on
    assert (result.best_iteration, result.best_loss) == (params.iterations, losses[-1])
    assert all(r.is_best for r in reports)
    scored = evaluate(result.image, content, [style], params, weights="random")["total"]
    assert scored == pytest.approx(losses[-1], rel=0.02)  # the uint8 rounding apart
    start = _initial(content, style, params)
    assert losses[0] < start
    assert losses[-1] < 0.9 * start


def _initial(content: Any, style: Any, params: Any) -> float:
    """The loss of the image the run starts from."""
    if params.init == "content":
        image = content
    else:
        image = np.random.default_rng(params.seed).random(content.shape, dtype=np.float32)
    return evaluate(image, content, [style], params, weights="random")["total"]


def test_lbfgs_and_adam_take_different_paths(content: Any, style: Any) -> None:
    """The parameter reaches the engine (the two runs differ), and each is repeatable."""
    adam, _ = _run(content, style, replace(LBFGS, optimizer="adam"))
    first, _ = _run(content, style, LBFGS)
    again, _ = _run(content, style, LBFGS)
    assert first.image.tobytes() == again.image.tobytes()
    assert first.best_loss == again.best_loss
    assert first.image.tobytes() != adam.image.tobytes()


def test_the_history_size_is_the_state_s(content: Any, style: Any) -> None:
    saved: list[EngineState] = []
    params = replace(LBFGS, lbfgs_history=3)
    transfer(
        content, [style], params, weights="random", checkpoint_due=lambda k: k in (2, 6),
        on_checkpoint=saved.append,
    )  # fmt: skip
    early, late = saved
    for state, held in ((early, 2), (late, 3)):  # a ring of 3: full after 3 pairs
        assert state.optimizer == "lbfgs" and state.adam_m is None and state.lbfgs is not None
        assert state.lbfgs.s_hist.shape == (3, *state.image.shape)
        assert state.lbfgs.count == held, state.lbfgs.count
    assert late.lbfgs is not None and late.lbfgs.head == (6 % 3)


def test_lbfgs_state_round_trips_losslessly(content: Any, style: Any) -> None:
    saved: list[EngineState] = []
    transfer(
        content, [style], LBFGS, weights="random", checkpoint_due=lambda k: k == 4,
        on_checkpoint=saved.append,
    )  # fmt: skip
    (state,) = saved
    back = EngineState.from_bytes(state.to_bytes())
    assert back.optimizer == "lbfgs" and back.lbfgs is not None and state.lbfgs is not None
    for name in ("losses", "grad", "v", "s_hist", "y_hist", "rho"):
        got, want = getattr(back.lbfgs, name), getattr(state.lbfgs, name)
        assert got.dtype == np.float32 and got.tobytes() == want.tobytes(), name
    for name in ("n_grads", "count", "head"):
        assert getattr(back.lbfgs, name) == getattr(state.lbfgs, name), name
    assert back.image.tobytes() == state.image.tobytes()
    assert not np.array_equal(back.lbfgs.s_hist, 0) and back.lbfgs.count == 4
    data = state.to_bytes()
    with pytest.raises(StateError):
        EngineState.from_bytes(data[: len(data) // 2])


def test_a_state_of_the_other_optimizer_is_refused(content: Any, style: Any) -> None:
    saved: dict[str, list[EngineState]] = {"adam": [], "lbfgs": []}
    for name, found in saved.items():
        transfer(
            content, [style], replace(LBFGS, optimizer=name), weights="random",
            checkpoint_due=lambda k: k == 2, on_checkpoint=found.append,
        )  # fmt: skip
    with pytest.raises(StateError):
        transfer(content, [style], LBFGS, weights="random", resume=saved["adam"][0])
    with pytest.raises(StateError):
        transfer(
            content, [style], replace(LBFGS, optimizer="adam"), weights="random",
            resume=saved["lbfgs"][0],
        )  # fmt: skip


# ---- coarse to fine ---------------------------------------------------------------------------


@pytest.mark.parametrize("optimizer", ["adam", "lbfgs"])
def test_scales_paint_small_first_and_number_iterations_through(
    content: Any, style: Any, optimizer: str
) -> None:
    params = replace(FAST, optimizer=optimizer, scales=2, iterations=8, snapshot_every=1)
    saved: list[EngineState] = []
    result, reports = _run(
        content, style, params, checkpoint_due=lambda k: True, on_checkpoint=saved.append
    )
    assert [r.iteration for r in reports] == list(range(1, 9))
    assert result.image.shape == content.shape  # 36x48: the final scale
    # every snapshot is shown at the final size, the coarse scale's enlarged
    assert {r.snapshot.shape for r in reports if r.snapshot is not None} == {content.shape}
    # iterations 1-4 at half the size (24 px), 5-8 at the full size
    assert [s.scale for s in saved] == [0, 0, 0, 0, 1, 1, 1]
    assert {s.image.shape for s in saved[:4]} == {(18, 24, 3)}
    assert {s.image.shape for s in saved[4:]} == {(36, 48, 3)}
    assert [s.scale_start for s in saved] == [0, 0, 0, 0, 4, 4, 4]
    # the best is the final scale's, and the final scale started from the coarse scale's
    # best image, enlarged (Adam reports the loss of the image an iteration starts from,
    # L-BFGS the loss after its step)
    assert result.best_iteration > 4
    enlarged = scales.upsample(saved[3].best_image, content.shape[:2])
    start = evaluate(enlarged, content, [style], params, weights="random")["total"]
    if optimizer == "adam":
        assert reports[4].loss == pytest.approx(start, rel=1e-5)
    else:
        assert reports[4].loss < start


def test_a_job_stopped_in_a_coarse_scale_gives_its_result_at_the_final_size(
    content: Any, style: Any
) -> None:
    params = replace(FAST, scales=2, iterations=8)
    result = transfer(content, [style], params, weights="random", should_stop=lambda: True)
    assert result.stopped and result.iterations_done == 1  # in the 24 px scale
    assert result.image.shape == content.shape  # enlarged, as its snapshots are


def test_scales_need_a_size_the_layers_can_see(content: Any, style: Any) -> None:
    # the parameters alone: 48 px / 4 = 12 px at the coarsest
    with pytest.raises(ParamError) as info:
        transfer(content, [style], replace(FAST, scales=3, max_size=48), weights="random")
    assert info.value.field == "scales"
    # the content (48 px, never enlarged) makes the coarsest 12 px too: block5 needs 16
    with pytest.raises(ValueError, match=r"scale 1 of 3 \(12 px\).*fewer scales"):
        transfer(content, [style], replace(FAST, scales=3, max_size=64), weights="random")
