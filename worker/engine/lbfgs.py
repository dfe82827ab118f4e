"""L-BFGS on the pixels, written with ``keras.ops`` only: the two-loop recursion, a bounded
history, and a backtracking line search that evaluates inside the compiled step.

Backend-neutral like :mod:`worker.engine.losses`: the TensorFlow step
(:mod:`worker.engine.step_lbfgs_tf`) passes its loss-and-gradient function in, and a JAX step
could pass ``jax.value_and_grad``'s. Nothing here leaves the device: the search's trial
points are evaluated in an ``ops.while_loop`` of the same graph, so an iteration is one call
whatever the number of evaluations it needs.

The method, and why:

- **History**: the last ``m`` pairs (s, y) = (x' - x, g' - g), each a full-image float32
  array, kept in a ring (``s_hist``/``y_hist`` of shape (m, 1, H, W, 3), ``rho`` = 1/(s.y),
  ``head`` where the next pair goes, ``count`` pairs held). A pair whose curvature s.y is
  not positive is not stored (it would make the estimate indefinite).
- **Starting matrix: a diagonal, not a scalar.** The two-loop starts from
  ``gamma * D`` with ``D = 1 / (sqrt(v_hat) + epsilon)``, Adam's per-pixel scaling (``v``
  the running mean of squared gradients, ``beta_2`` and ``epsilon`` the job's), and
  ``gamma = s.y / (y.D.y)`` from the newest pair. On this loss the gradient's size differs
  by orders of magnitude between pixels; with the textbook scalar ``gamma`` L-BFGS moved
  few pixels and lost to Adam by far more (bench/RESULTS.md).
- **Bounds**: pixels stay in [0, 1] like Adam's (the loss is always that of a valid image,
  and the result is the image measured). The direction is zeroed where it would push a
  pixel already on a bound outwards, and the trial point is clipped (projected L-BFGS).
- **Step: a backtracking (Armijo) line search, not a fixed step.** The loss spans orders
  of magnitude between jobs and sizes, so no fixed step suits all, and a step that
  overshoots would go unnoticed; with the scaling above the unit step is accepted on
  nearly every iteration, so the search usually costs the one evaluation the iteration
  needs anyway. Sufficient decrease also makes the reported loss fall at every iteration,
  which a fixed step (torch's LBFGS default, neural-style's) does not promise. A failed
  trial is followed by the minimiser of the quadratic through f(x), its slope and
  f(trial), kept within [0.1, 0.5] of the failed step; after ``MAX_TRIALS`` failures the
  image stays, the history is cleared, and the next iteration starts again from the
  diagonal step.
- **First step** (or after a reset): ``-learning_rate * D * g``, Adam's first step without
  momentum (about ``learning_rate`` per pixel, on the same [0, 1] scale).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from keras import ops

Tensor = Any  # a backend tensor
# loss-and-gradient: image -> ((total, content, style, tv) stacked as a (4,) vector, gradient)
ValueAndGrad = Callable[[Tensor], tuple[Tensor, Tensor]]

DEFAULT_HISTORY = 10  # pairs; the memory model counts m full-image float32 (s, y) pairs
ARMIJO_C1 = 1e-4  # sufficient-decrease constant (Nocedal & Wright's usual choice)
MAX_TRIALS = 5  # evaluations one iteration may spend before it gives up and resets
CURVATURE_EPS = 1e-10  # a pair is kept only if s.y > CURVATURE_EPS * y.y


def _dot(a: Tensor, b: Tensor) -> Tensor:
    return ops.sum(a * b)


def _pair(hist: Tensor, i: Tensor) -> Tensor:
    return ops.take(hist, i, axis=0)


def inverse_diagonal(v: Tensor, n_grads: Tensor, beta_2: Tensor, epsilon: Tensor) -> Tensor:
    """The diagonal the two-loop starts from: ``1 / (sqrt(v_hat) + epsilon)`` (Adam's)."""
    v_hat = v / (1.0 - ops.power(beta_2, ops.cast(ops.maximum(n_grads, 1), "float32")))
    return 1.0 / (ops.sqrt(v_hat) + epsilon)


def direction(
    grad: Tensor,
    diag: Tensor,
    s_hist: Tensor,
    y_hist: Tensor,
    rho: Tensor,
    count: Tensor,
    head: Tensor,
    first_step: Tensor,
) -> Tensor:
    """The two-loop recursion: ``-H grad`` for the history's inverse-Hessian estimate ``H``,
    starting from ``c * diag`` (``c`` from the newest pair).

    ``count`` (int32 scalar) pairs are valid, the newest at ``head - 1`` (mod m). With no
    pairs: ``-first_step * diag * grad``.
    """
    m = ops.shape(s_hist)[0]
    newest = ops.mod(head - 1 + m, m)

    def first(j: Tensor, carry: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        q, alphas = carry
        i = ops.mod(newest - j + m, m)
        alpha = ops.take(rho, i) * _dot(_pair(s_hist, i), q)
        q = q - alpha * _pair(y_hist, i)
        alphas = ops.where(ops.arange(m) == i, alpha, alphas)
        return q, alphas

    q, alphas = ops.fori_loop(0, count, first, (grad, ops.zeros((m,), "float32")))

    s_new, y_new = _pair(s_hist, newest), _pair(y_hist, newest)
    gamma = _dot(s_new, y_new) / ops.maximum(_dot(y_new, diag * y_new), 1e-30)
    r = q * diag * ops.where(count > 0, gamma, first_step)

    def second(j: Tensor, r: Tensor) -> Tensor:
        i = ops.mod(newest - count + 1 + j + m, m)
        beta = ops.take(rho, i) * _dot(_pair(y_hist, i), r)
        return r + (ops.take(alphas, i) - beta) * _pair(s_hist, i)

    r = ops.fori_loop(0, count, second, r)
    return -r


def _feasible(x: Tensor, d: Tensor) -> Tensor:
    """``d`` with the components that push a pixel on a bound outwards zeroed."""
    outwards = ((x <= 0.0) & (d < 0.0)) | ((x >= 1.0) & (d > 0.0))
    return ops.where(outwards, 0.0, d)


def step(
    x: Tensor,
    losses: Tensor,
    grad: Tensor,
    v: Tensor,
    n_grads: Tensor,
    s_hist: Tensor,
    y_hist: Tensor,
    rho: Tensor,
    count: Tensor,
    head: Tensor,
    hyper: Tensor,
    value_and_grad: ValueAndGrad,
) -> tuple[Tensor, ...]:
    """One L-BFGS iteration from ``x`` (whose ``losses`` and ``grad`` are known, and already
    counted in ``v``).

    Returns ``(x, losses, grad, v, n_grads, s_hist, y_hist, rho, count, head, evaluations)``:
    the accepted image with its losses and gradient (or ``x`` unchanged, history cleared,
    when no trial decreased the loss) and the updated history.
    """
    first_step, beta_2, epsilon, one_minus_beta_2 = hyper[3], hyper[5], hyper[6], hyper[8]
    f = losses[0]
    diag = inverse_diagonal(v, n_grads, beta_2, epsilon)
    d = _feasible(x, direction(grad, diag, s_hist, y_hist, rho, count, head, first_step))
    # Not a descent direction (a stale history): forget it, start again from the diagonal.
    restart = _dot(grad, d) >= 0.0
    count = ops.where(restart, 0, count)
    d = ops.cond(
        restart,
        lambda: _feasible(x, direction(grad, diag, s_hist, y_hist, rho, count, head, first_step)),
        lambda: d,
    )

    def search_cond(t, tries, done, x1, l1, g1):  # type: ignore[no-untyped-def]
        return ops.logical_and(ops.logical_not(done), tries < MAX_TRIALS)

    def search_body(t, tries, done, x1, l1, g1):  # type: ignore[no-untyped-def]
        trial = ops.clip(x + t * d, 0.0, 1.0)
        l_trial, g_trial = value_and_grad(trial)
        decrease = ops.minimum(_dot(grad, trial - x), 0.0)  # the model's predicted change
        f_trial = l_trial[0]
        ok = ops.logical_and(f_trial <= f + ARMIJO_C1 * decrease, f_trial < f)
        # quadratic through f(0), its slope along the step and f(t); kept in [0.1t, 0.5t]
        slope = decrease / t
        curv = f_trial - f - slope * t
        t_quad = -slope * t * t / ops.maximum(2.0 * curv, 1e-30)
        t_next = ops.clip(ops.where(curv > 0.0, t_quad, 0.5 * t), 0.1 * t, 0.5 * t)
        return (
            ops.where(ok, t, t_next),
            tries + 1,
            ok,
            ops.where(ok, trial, x1),
            ops.where(ok, l_trial, l1),
            ops.where(ok, g_trial, g1),
        )

    one = ops.convert_to_tensor(1.0, "float32")
    _, tries, accepted, x_new, l_new, g_new = ops.while_loop(
        search_cond,
        search_body,
        (one, ops.convert_to_tensor(0, "int32"), ops.convert_to_tensor(False), x, losses, grad),
    )

    s = x_new - x
    y = g_new - grad
    sy = _dot(s, y)
    keep = ops.logical_and(accepted, sy > CURVATURE_EPS * _dot(y, y))
    m = ops.shape(s_hist)[0]
    slot = ops.arange(m) == head
    s_hist = ops.where(ops.logical_and(keep, ops.reshape(slot, (-1, 1, 1, 1, 1))), s[None], s_hist)
    y_hist = ops.where(ops.logical_and(keep, ops.reshape(slot, (-1, 1, 1, 1, 1))), y[None], y_hist)
    rho = ops.where(ops.logical_and(keep, slot), 1.0 / ops.where(keep, sy, 1.0), rho)
    head = ops.where(keep, ops.mod(head + 1, m), head)
    count = ops.where(keep, ops.minimum(count + 1, m), count)
    count = ops.where(accepted, count, 0)  # no decrease found: forget the history
    v = ops.where(accepted, v + (ops.square(g_new) - v) * one_minus_beta_2, v)
    n_grads = ops.where(accepted, n_grads + 1, n_grads)
    return x_new, l_new, g_new, v, n_grads, s_hist, y_hist, rho, count, head, tries
