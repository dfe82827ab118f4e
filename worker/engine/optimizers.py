"""The two optimisers behind one small interface, so the loop in :mod:`core` is the same for
both: start (or restore), step, the image now, and the state a checkpoint keeps.

- **Adam** (:func:`worker.engine.losses.adam_update` in :mod:`step_tf`'s compiled step): each
  iteration evaluates the image it starts from and moves it; its loss is that image's.
- **L-BFGS** (:mod:`worker.engine.lbfgs` in :mod:`step_lbfgs_tf`'s compiled step): the
  starting image is evaluated once, then each iteration searches along the two-loop
  direction and ends on an evaluated image; its loss is that (new) image's, so the losses
  an L-BFGS run reports fall monotonically.

Both keep everything on the device between iterations; the host sees four floats (the
losses) per iteration, and the arrays only for a snapshot or a checkpoint.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
from keras import ops

from stylequeue.worker.engine import step_lbfgs_tf, step_tf
from stylequeue.worker.engine.extractor import Extractor
from stylequeue.worker.engine.state import EngineState, LbfgsState


def _host(t: Any) -> np.ndarray:
    """A (1, ...) image tensor as a NumPy float32 copy without the batch axis."""
    return np.array(ops.convert_to_numpy(t)[0], dtype=np.float32)


class Stepped(NamedTuple):
    """One iteration's outcome: the new carry, the losses (a (4,) tensor) and the image
    they were measured on (Adam: the one the iteration started from; L-BFGS: the new one).
    A NamedTuple: one is made per iteration on the loop thread."""

    carry: tuple[Any, ...]
    losses: Any
    measured: Any
    evaluations: Any = 1  # loss-and-gradient evaluations it took (L-BFGS: a tensor)


class Optimizer:
    """What the loop needs of an optimiser (see the module's docstring)."""

    name = ""

    def start(self, x: Any) -> tuple[Any, ...]:
        raise NotImplementedError

    def restore(self, state: EngineState) -> tuple[Any, ...]:
        raise NotImplementedError

    def step(self, carry: tuple[Any, ...], t: Any) -> Stepped:
        """One iteration; ``t`` is its number within the scale (1-based), a float32 scalar
        tensor (``step_tf.iteration_tensors``: no conversion on the loop thread)."""
        raise NotImplementedError

    def image(self, carry: tuple[Any, ...]) -> Any:
        return carry[0]

    def state_fields(self, carry: tuple[Any, ...]) -> dict[str, Any]:
        """The optimiser's part of an :class:`EngineState` (NumPy copies)."""
        raise NotImplementedError


class Adam(Optimizer):
    name = "adam"

    def __init__(self, step: Any, targets: tuple[Any, ...]) -> None:
        self._step, self._targets = step, targets

    def start(self, x: Any) -> tuple[Any, ...]:
        return x, ops.zeros_like(x), ops.zeros_like(x)

    def restore(self, state: EngineState) -> tuple[Any, ...]:
        assert state.adam_m is not None and state.adam_v is not None
        return tuple(
            ops.convert_to_tensor(a[None]) for a in (state.image, state.adam_m, state.adam_v)
        )

    def step(self, carry: tuple[Any, ...], t: Any) -> Stepped:
        x, m, v = carry
        x_new, m, v, losses = self._step(x, m, v, t, *self._targets)
        return Stepped((x_new, m, v), losses, x)

    def state_fields(self, carry: tuple[Any, ...]) -> dict[str, Any]:
        _, m, v = carry
        return {"optimizer": "adam", "adam_m": _host(m), "adam_v": _host(v), "lbfgs": None}


class Lbfgs(Optimizer):
    name = "lbfgs"

    def __init__(
        self, evaluate: Any, step: Any, targets: tuple[Any, ...], history: int, beta_2: float
    ) -> None:
        self._evaluate, self._step, self._targets = evaluate, step, targets
        self._history = history
        self._one_minus_beta_2 = np.float32(1.0 - beta_2)

    def start(self, x: Any) -> tuple[Any, ...]:
        losses, grad = self._evaluate(x, *self._targets)
        shape = (self._history, *ops.shape(x))
        # v starts as the first gradient's share, exactly as the step adds the later ones
        v = ops.square(grad) * self._one_minus_beta_2
        return (
            x, losses, grad, v, ops.convert_to_tensor(1, "int32"),
            ops.zeros(shape, "float32"), ops.zeros(shape, "float32"),
            ops.zeros((self._history,), "float32"),
            ops.convert_to_tensor(0, "int32"), ops.convert_to_tensor(0, "int32"),
        )  # fmt: skip

    def restore(self, state: EngineState) -> tuple[Any, ...]:
        lb = state.lbfgs
        assert lb is not None
        if lb.s_hist.shape[0] != self._history:
            raise ValueError(f"the state keeps {lb.s_hist.shape[0]} pairs, not {self._history}")

        def image(a: np.ndarray) -> Any:
            return ops.convert_to_tensor(a[None])

        def pairs(a: np.ndarray) -> Any:
            return ops.convert_to_tensor(a[:, None])

        return (
            image(state.image), ops.convert_to_tensor(lb.losses), image(lb.grad), image(lb.v),
            ops.convert_to_tensor(lb.n_grads, "int32"), pairs(lb.s_hist), pairs(lb.y_hist),
            ops.convert_to_tensor(lb.rho), ops.convert_to_tensor(lb.count, "int32"),
            ops.convert_to_tensor(lb.head, "int32"),
        )  # fmt: skip

    def step(self, carry: tuple[Any, ...], t: Any) -> Stepped:
        out = self._step(*carry, *self._targets)
        carry = tuple(out[:10])
        return Stepped(carry, carry[1], carry[0], out[10])

    def state_fields(self, carry: tuple[Any, ...]) -> dict[str, Any]:
        _, losses, grad, v, n_grads, s_hist, y_hist, rho, count, head = carry

        def pairs(t: Any) -> np.ndarray:
            return np.array(ops.convert_to_numpy(t)[:, 0], dtype=np.float32)

        lb = LbfgsState(
            losses=np.array(ops.convert_to_numpy(losses), dtype=np.float32),
            grad=_host(grad), v=_host(v), n_grads=int(n_grads),
            s_hist=pairs(s_hist), y_hist=pairs(y_hist),
            rho=np.array(ops.convert_to_numpy(rho), dtype=np.float32),
            count=int(count), head=int(head),
        )  # fmt: skip
        return {"optimizer": "lbfgs", "adam_m": None, "adam_v": None, "lbfgs": lb}


def make(
    name: str,
    extractor: Extractor,
    content_layers: tuple[str, ...],
    style_layers: tuple[str, ...],
    targets: tuple[Any, ...],
    *,
    history: int,
    beta_2: float,
    xla: bool,
    deterministic: bool | None,
) -> Optimizer:
    """The optimiser ``name`` (``adam`` or ``lbfgs``) with its compiled step.

    ``targets``: ``(content_targets, style_targets, content_lw, style_lw, hyper)``.
    """
    if name == "lbfgs":
        evaluate, step = step_lbfgs_tf.get_functions(
            extractor, content_layers, style_layers, xla=xla, deterministic=deterministic
        )
        return Lbfgs(evaluate, step, targets, history, beta_2)
    if name != "adam":
        raise ValueError(f"unknown optimizer {name!r}")
    adam = step_tf.get_step(
        extractor, content_layers, style_layers, xla=xla, deterministic=deterministic
    )
    return Adam(adam, targets)
