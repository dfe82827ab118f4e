"""The optimisation's whole state between two iterations: what a checkpoint holds.

NumPy only (no TensorFlow), so the runner can read and write checkpoints without loading the
engine. Saved losslessly (``np.savez``: the float32 arrays bit for bit, the best loss as a
float64), so a run resumed from it computes exactly what the undisturbed run would have.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

import numpy as np

_ARRAYS = ("image", "adam_m", "adam_v", "best_image")


class StateError(ValueError):
    """Bytes that are not a valid engine state, or a state that does not fit the job."""


@dataclass(frozen=True, eq=False)
class EngineState:
    """The loop's state after iteration ``iteration``'s update.

    ``image``, ``adam_m``, ``adam_v`` and ``best_image`` are float32 HxWx3 arrays (the image
    being optimised, Adam's moments, the lowest-loss image so far); Adam's step counter is the
    iteration itself (the next step is ``iteration + 1``). ``elapsed`` is the loop's seconds so
    far, so reported times continue across a resume.
    """

    iteration: int
    image: np.ndarray
    adam_m: np.ndarray
    adam_v: np.ndarray
    best_image: np.ndarray
    best_loss: float
    best_iteration: int
    elapsed: float

    def check(self, shape: tuple[int, ...] | None = None) -> None:
        """Raise :class:`StateError` unless the state is consistent (and of ``shape``)."""
        if self.iteration < 1 or not 1 <= self.best_iteration <= self.iteration:
            raise StateError(f"iteration {self.iteration}, best {self.best_iteration}")
        if not math.isfinite(self.best_loss):
            raise StateError(f"best loss {self.best_loss}")
        want = shape if shape is not None else self.image.shape
        for name in _ARRAYS:
            arr = getattr(self, name)
            if arr.dtype != np.float32 or arr.shape != want or arr.ndim != 3:
                raise StateError(f"{name} is {arr.dtype} {arr.shape}, expected float32 {want}")

    def to_bytes(self) -> bytes:
        buf = io.BytesIO()
        np.savez(
            buf,
            image=np.ascontiguousarray(self.image),
            adam_m=np.ascontiguousarray(self.adam_m),
            adam_v=np.ascontiguousarray(self.adam_v),
            best_image=np.ascontiguousarray(self.best_image),
            iteration=np.int64(self.iteration),
            adam_step=np.int64(self.iteration),
            best_loss=np.float64(self.best_loss),
            best_iteration=np.int64(self.best_iteration),
            elapsed=np.float64(self.elapsed),
        )
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> EngineState:
        """The state :meth:`to_bytes` wrote; :class:`StateError` for anything else."""
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as npz:
                arrays = {name: np.array(npz[name]) for name in _ARRAYS}
                iteration = int(npz["iteration"])
                step = int(npz["adam_step"])
                state = cls(
                    iteration=iteration,
                    **arrays,
                    best_loss=float(npz["best_loss"]),
                    best_iteration=int(npz["best_iteration"]),
                    elapsed=float(npz["elapsed"]),
                )
        except Exception as exc:  # a zip, npy or key error: all mean not ours
            raise StateError(f"unreadable engine state: {exc}") from exc
        if step != iteration:
            raise StateError(f"Adam step {step} is not the iteration {iteration}")
        state.check()
        return state
