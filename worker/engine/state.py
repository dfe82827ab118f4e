"""The optimisation's whole state between two iterations: what a checkpoint holds.

NumPy only (no TensorFlow), so the runner can read and write checkpoints without loading the
engine. Saved losslessly (``np.savez``: the float32 arrays bit for bit, the best loss as a
float64), so a run resumed from it computes exactly what the undisturbed run would have.

Two optimisers, two kinds of state: Adam's two moments (``adam_m``, ``adam_v``), or
L-BFGS's history and the last evaluation (:class:`LbfgsState`). A state written before
L-BFGS existed has no ``optimizer`` entry and reads as Adam's.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

_ARRAYS = ("image", "best_image")
_ADAM = ("adam_m", "adam_v")
_LBFGS_IMAGES = ("grad", "v")  # image-shaped
_LBFGS_HISTORY = ("s_hist", "y_hist")  # (m, H, W, 3)
_LBFGS_INTS = ("n_grads", "count", "head")


class StateError(ValueError):
    """Bytes that are not a valid engine state, or a state that does not fit the job."""


@dataclass(frozen=True, eq=False)
class LbfgsState:
    """L-BFGS between two iterations (:mod:`worker.engine.lbfgs`): the current image's
    ``losses`` (total, content, style, tv) and ``grad``, the running mean ``v`` of squared
    gradients over ``n_grads`` gradients (the starting diagonal), and the ring of ``count``
    (s, y) pairs with ``rho`` = 1 / s.y, the next pair going to ``head``."""

    losses: np.ndarray  # float32 (4,)
    grad: np.ndarray
    v: np.ndarray
    n_grads: int
    s_hist: np.ndarray  # float32 (m, H, W, 3)
    y_hist: np.ndarray
    rho: np.ndarray  # float32 (m,)
    count: int
    head: int

    def check(self, shape: tuple[int, ...]) -> None:
        m = self.s_hist.shape[0] if self.s_hist.ndim == 4 else -1
        wants = {
            "losses": (4,), "grad": shape, "v": shape, "s_hist": (m, *shape),
            "y_hist": (m, *shape), "rho": (m,),
        }  # fmt: skip
        for name, want in wants.items():
            arr = getattr(self, name)
            if m < 1 or arr.dtype != np.float32 or arr.shape != want:
                raise StateError(f"L-BFGS {name} is {arr.dtype} {arr.shape}, expected {want}")
        if not (0 <= self.count <= m and 0 <= self.head < m and self.n_grads >= 1):
            raise StateError(f"L-BFGS count {self.count}, head {self.head} of {m}")

    def arrays(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            f"lbfgs_{n}": np.ascontiguousarray(getattr(self, n))
            for n in ("losses", *_LBFGS_IMAGES, *_LBFGS_HISTORY, "rho")
        }
        out.update({f"lbfgs_{n}": np.int64(getattr(self, n)) for n in _LBFGS_INTS})
        return out

    @classmethod
    def read(cls, npz: Any) -> LbfgsState:
        def get(name: str) -> np.ndarray:
            return np.array(npz[f"lbfgs_{name}"])

        return cls(
            losses=get("losses"), grad=get("grad"), v=get("v"), n_grads=int(get("n_grads")),
            s_hist=get("s_hist"), y_hist=get("y_hist"), rho=get("rho"),
            count=int(get("count")), head=int(get("head")),
        )  # fmt: skip


@dataclass(frozen=True, eq=False)
class EngineState:
    """The loop's state after iteration ``iteration``'s update.

    ``image`` and ``best_image`` are float32 HxWx3 arrays (the image being optimised, the
    lowest-loss image so far); Adam's moments ``adam_m``/``adam_v`` (same shape) or
    ``lbfgs`` hold the optimiser's state, whichever ``optimizer`` says; Adam's step counter
    is the iteration within the scale (the next step is one more). ``scale`` is the
    coarse-to-fine stage (0: the coarsest; always 0 for one scale): the arrays are that
    scale's size. ``elapsed`` is the loop's seconds so far, so reported times continue
    across a resume.
    """

    iteration: int
    image: np.ndarray
    adam_m: np.ndarray | None
    adam_v: np.ndarray | None
    best_image: np.ndarray
    best_loss: float
    best_iteration: int
    elapsed: float
    optimizer: str = "adam"
    lbfgs: LbfgsState | None = None
    scale: int = 0
    scale_start: int = 0  # the last iteration before this scale began (its step counts from)

    def check(self, shape: tuple[int, ...] | None = None) -> None:
        """Raise :class:`StateError` unless the state is consistent (and of ``shape``)."""
        if self.iteration < 1 or not 1 <= self.best_iteration <= self.iteration:
            raise StateError(f"iteration {self.iteration}, best {self.best_iteration}")
        if not 0 <= self.scale_start < self.iteration or self.scale < 0:
            raise StateError(f"scale {self.scale} from {self.scale_start}, at {self.iteration}")
        if not math.isfinite(self.best_loss):
            raise StateError(f"best loss {self.best_loss}")
        want = shape if shape is not None else self.image.shape
        names = _ARRAYS + (_ADAM if self.optimizer == "adam" else ())
        for name in names:
            arr = getattr(self, name)
            if arr is None or arr.dtype != np.float32 or arr.shape != want or arr.ndim != 3:
                raise StateError(f"{name} is {arr!r:.40}, expected float32 {want}")
        if self.optimizer == "lbfgs":
            if self.lbfgs is None:
                raise StateError("an L-BFGS state without its history")
            self.lbfgs.check(tuple(want))
        elif self.optimizer != "adam":
            raise StateError(f"unknown optimizer {self.optimizer!r}")

    def to_bytes(self) -> bytes:
        arrays: dict[str, Any] = {n: np.ascontiguousarray(getattr(self, n)) for n in _ARRAYS}
        if self.optimizer == "adam":
            assert self.adam_m is not None and self.adam_v is not None
            arrays.update(adam_m=np.ascontiguousarray(self.adam_m),
                          adam_v=np.ascontiguousarray(self.adam_v),
                          adam_step=np.int64(self.iteration - self.scale_start))  # fmt: skip
        else:
            assert self.lbfgs is not None
            arrays.update(self.lbfgs.arrays())
        buf = io.BytesIO()
        np.savez(
            buf,
            **arrays,
            optimizer=np.str_(self.optimizer),
            iteration=np.int64(self.iteration),
            best_loss=np.float64(self.best_loss),
            best_iteration=np.int64(self.best_iteration),
            elapsed=np.float64(self.elapsed),
            scale=np.int64(self.scale),
            scale_start=np.int64(self.scale_start),
        )
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> EngineState:
        """The state :meth:`to_bytes` wrote; :class:`StateError` for anything else."""
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as npz:
                state = cls._read(npz)
        except StateError:
            raise
        except Exception as exc:  # a zip, npy or key error: all mean not ours
            raise StateError(f"unreadable engine state: {exc}") from exc
        state.check()
        return state

    @classmethod
    def _read(cls, npz: Any) -> EngineState:
        files = set(npz.files)
        optimizer = str(npz["optimizer"]) if "optimizer" in files else "adam"
        iteration = int(npz["iteration"])
        scale_start = int(npz["scale_start"]) if "scale_start" in files else 0
        adam_m = adam_v = None
        lbfgs = None
        if optimizer == "adam":
            adam_m, adam_v = np.array(npz["adam_m"]), np.array(npz["adam_v"])
            step = int(npz["adam_step"])
            if step != iteration - scale_start:
                raise StateError(f"Adam step {step} is not the iteration {iteration}")
        else:
            lbfgs = LbfgsState.read(npz)
        return cls(
            iteration=iteration,
            image=np.array(npz["image"]),
            adam_m=adam_m,
            adam_v=adam_v,
            best_image=np.array(npz["best_image"]),
            best_loss=float(npz["best_loss"]),
            best_iteration=int(npz["best_iteration"]),
            elapsed=float(npz["elapsed"]),
            optimizer=optimizer,
            lbfgs=lbfgs,
            scale=int(npz["scale"]) if "scale" in files else 0,
            scale_start=scale_start,
        )
