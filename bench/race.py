"""Optimisers and scales raced against the clock: time to reach a loss, loss at equal time.

    python bench/engine.py --race --size 512

(``bench/engine.py --race`` runs this; see ``--help``.) Every variant runs in ONE process
and they take turns, one iteration each, round-robin: on a shared machine whatever slows
one variant slows the others at the same moments, so their clocks stay comparable (the
engine's own timings are per variant, so a variant that waits for its turn is not charged
for it). Each variant's clock counts its own iterations and, for coarse-to-fine, the
preparation of each new scale (targets at the new size); the one-off work every job
shares (building VGG19, tracing the steps) is done before the race on a tiny image, as a
worker does at start.

Variants: ``adam``, ``lbfgs``, their coarse-to-fine versions ``adam-s2``, ``lbfgs-s2``
(``scales = 2``, the engine's split), and ``adam-s2-carry``: Adam's moments carried
across the scales, enlarged (the engine starts each scale afresh; this measures whether it
should). Losses are the engine's own per-iteration totals at the final size (a
coarse-to-fine run has one only in its last scale); Adam's is that of the image an
iteration starts from, L-BFGS's that of the image it ends on.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from stylequeue.shared.params import TransferParams

VARIANTS = ("adam", "lbfgs", "adam-s2", "adam-s2-carry", "lbfgs-s2")


def parse_spec(spec: str, default_iterations: int) -> list[tuple[str, int]]:
    """``adam:300,lbfgs:150`` -> [("adam", 300), ("lbfgs", 150)]."""
    out = []
    for item in spec.split(","):
        name, _, count = item.strip().partition(":")
        if name not in VARIANTS:
            raise SystemExit(f"unknown race variant {name!r}; known: {', '.join(VARIANTS)}")
        out.append((name, int(count) if count else default_iterations))
    return out


@dataclass
class Curve:
    """What one variant did: per iteration, its clock and (at the final size) its loss."""

    name: str
    params: TransferParams
    clock: list[float] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)  # nan before the final scale
    evaluations: int = 0  # loss-and-gradient evaluations (L-BFGS's line search may add)

    def time_to(self, target: float) -> float | None:
        for t, loss in zip(self.clock, self.loss, strict=True):
            if loss <= target:
                return t
        return None

    def best_by(self, seconds: float) -> float:
        """The lowest final-size loss seen by ``seconds`` on this variant's clock."""
        seen = [loss for t, loss in zip(self.clock, self.loss, strict=True) if t <= seconds]
        finite = [x for x in seen if math.isfinite(x)]
        return min(finite) if finite else math.nan

    @property
    def best(self) -> float:
        return self.best_by(math.inf)


class Racer:
    """One variant, stepped one iteration at a time with the engine's own parts."""

    def __init__(
        self, name: str, iterations: int, content: np.ndarray, style: np.ndarray, base: Any
    ) -> None:
        from stylequeue.worker.engine import imageio, scales

        optimizer = "lbfgs" if name.startswith("lbfgs") else "adam"
        n_scales = 2 if "-s2" in name else 1
        self.carry_moments = name.endswith("-carry")
        self.params = replace(base, optimizer=optimizer, scales=n_scales, iterations=iterations)
        self.content, self.style = content, style
        final = imageio.resize_max(imageio.as_rgb_array(content), self.params.max_size).shape
        self.plan = scales.plan(max(final[:2]), n_scales, iterations)
        self.curve = Curve(name, self.params)
        self.k = 0
        self.index = -1
        self.best_x: Any = None
        self.best_loss = math.inf

    @property
    def done(self) -> bool:
        return self.k >= self.params.iterations

    def _enter(self, index: int) -> None:
        """Prepare scale ``index``: targets at its size, the optimiser from rest (or with
        Adam's moments enlarged), starting from the previous scale's best image."""
        from keras import ops

        from stylequeue.worker.engine import core, optimizers, scales

        previous = getattr(self, "carry", None)
        job = core._prepare(
            self.content, [self.style], self.params, "random", self.plan[index].longest
        )
        self.job = job
        self.opt = optimizers.make(
            self.params.optimizer, job.extractor, job.content_layers, job.style_layers,
            core._targets(job), history=self.params.lbfgs_history, beta_2=self.params.beta_2,
            xla=False, deterministic=None,
        )  # fmt: skip
        shape = job.content.shape[:2]
        if index == 0:
            start = core._initial_image(job)
        else:
            start = scales.upsample(np.asarray(ops.convert_to_numpy(self.best_x))[0], shape)
        self.carry = self.opt.start(ops.convert_to_tensor(start[None]))
        if self.params.optimizer == "lbfgs":
            self.curve.evaluations += 1  # the starting image's
        if self.carry_moments and previous is not None:
            _, m, v = previous
            self.carry = (
                self.carry[0],
                *(
                    ops.convert_to_tensor(
                        _enlarge_signed(np.asarray(ops.convert_to_numpy(a))[0], shape)[None]
                    )
                    for a in (m, v)
                ),
            )
        self.index = index
        self.best_x, self.best_loss = self.carry[0], math.inf

    def step(self) -> None:
        from keras import ops

        started = time.perf_counter()
        self.k += 1
        index = next(i for i, s in enumerate(self.plan) if s.first <= self.k <= s.last)
        if index != self.index:
            self._enter(index)
        stage = self.plan[index]
        local = self.k - stage.first + 1
        # Adam's moments carried over keep counting their steps from the previous scale
        if self.carry_moments and index > 0:
            local = self.k
        stepped = self.opt.step(self.carry, ops.convert_to_tensor(np.float32(local)))
        self.curve.evaluations += int(stepped.evaluations)
        self.carry = stepped.carry
        losses = ops.convert_to_numpy(stepped.losses)
        total = float(losses[0])
        if total < self.best_loss:
            self.best_x, self.best_loss = stepped.measured, total
        elapsed = time.perf_counter() - started
        previous = self.curve.clock[-1] if self.curve.clock else 0.0
        self.curve.clock.append(previous + elapsed)
        self.curve.loss.append(total if index == len(self.plan) - 1 else math.nan)


def _enlarge_signed(arr: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A float array (any sign) enlarged to ``shape`` by pixel repetition and a crop/pad."""
    h, w = shape
    fy, fx = math.ceil(h / arr.shape[0]), math.ceil(w / arr.shape[1])
    big = np.repeat(np.repeat(arr, fy, axis=0), fx, axis=1)[:h, :w]
    if big.shape[:2] != (h, w):
        big = np.pad(big, ((0, h - big.shape[0]), (0, w - big.shape[1]), (0, 0)), mode="edge")
    return np.ascontiguousarray(big, dtype=np.float32)


def warm(content: np.ndarray, style: np.ndarray, base: TransferParams) -> None:
    """Build VGG19 and trace both optimisers' steps on a tiny image (not timed)."""
    from stylequeue.worker.engine import transfer

    for optimizer in ("adam", "lbfgs"):
        transfer(
            content[:64, :64], [style[:64, :64]],
            replace(base, optimizer=optimizer, iterations=2, max_size=64, scales=1),
            weights="random",
        )  # fmt: skip


def race(
    content: np.ndarray,
    style: np.ndarray,
    base: TransferParams,
    spec: list[tuple[str, int]],
    partial: Path | None = None,
) -> list[Curve]:
    """Run the variants round-robin; every 10 rounds the curves so far go to ``partial``
    (JSON) and a line to stderr, so a long race that is killed still leaves its figures."""
    warm(content, style, base)
    racers = [Racer(name, n, content, style, base) for name, n in spec]
    rounds = 0
    while not all(r.done for r in racers):
        for r in racers:
            if not r.done:
                r.step()
        rounds += 1
        if rounds % 10 == 0:
            status = ", ".join(f"{r.curve.name} {r.k} ({r.curve.clock[-1]:.0f} s)" for r in racers)
            print(f"race: {status}", file=sys.stderr, flush=True)
            if partial is not None:
                partial.write_text(dump(r.curve for r in racers))
    if partial is not None:
        partial.write_text(dump(r.curve for r in racers))
    return [r.curve for r in racers]


def dump(curves: Iterable[Curve]) -> str:
    return json.dumps([c.__dict__ | {"params": c.params.to_dict()} for c in curves])


def load(text: str) -> list[Curve]:
    """Curves from :func:`dump`'s JSON (to print a killed race's tables)."""
    out = []
    for raw in json.loads(text):
        raw["params"] = TransferParams.from_dict(raw["params"])
        out.append(Curve(**raw))
    return out


def report(curves: list[Curve], header: list[str]) -> str:
    """The tables, as Markdown."""
    lines = [*header, ""]
    by_name = {c.name: c for c in curves}
    ref = by_name.get("adam")
    target = ref.best if ref is not None else math.nan
    ref_time = ref.clock[-1] if ref is not None else math.nan
    if ref is not None:
        lines.append(
            f"Reference: Adam's best loss in its {len(ref.loss)} iterations, "
            f"{target:.5g}, in {ref_time:.0f} s."
        )
        lines.append("")
    lines.append(
        "| variant | iterations | evaluations | seconds | s/iteration (final size, median) "
        "| best loss | time to Adam's best loss | vs Adam's time "
        "| best loss by half Adam's time |"
    )
    lines.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for c in curves:
        final = [
            b - a
            for a, b, loss in zip([0.0, *c.clock], c.clock, c.loss, strict=False)
            if math.isfinite(loss)
        ]
        reached = c.time_to(target)
        ratio = f"{reached / ref_time:.2f}" if reached is not None else "not reached"
        lines.append(
            f"| {c.name} | {len(c.loss)} | {c.evaluations} | {c.clock[-1]:.0f} "
            f"| {np.median(final):.3f} "
            f"| {c.best:.5g} | {f'{reached:.0f} s' if reached is not None else '-'} "
            f"| {ratio} | {c.best_by(ref_time / 2):.5g} |"
        )
    lines += ["", *_equal_time(curves)]
    return "\n".join(lines)


def _equal_time(curves: list[Curve]) -> list[str]:
    """Each coarse-to-fine run against its single-scale optimiser at the same clock."""
    singles = {c.params.optimizer: c for c in curves if c.params.scales == 1}
    rows = []
    for c in curves:
        single = singles.get(c.params.optimizer)
        if c.params.scales == 1 or single is None:
            continue
        t = c.clock[-1]
        against = single.best_by(t)
        note = "" if t <= single.clock[-1] else " (single-scale run ended sooner)"
        change = 100 * (c.best - against) / against
        rows.append(
            f"| {c.name} | {t:.0f} | {c.best:.5g} | {single.name} | {against:.5g}{note} "
            f"| {change:+.2f}% |"
        )
    if not rows:
        return []
    return [
        "Coarse to fine at equal time (the single-scale run's best loss by the moment the "
        "coarse-to-fine run ended):",
        "",
        "| coarse to fine | seconds | its best loss | single scale | its best loss by then "
        "| difference |",
        "|---|---:|---:|---|---:|---:|",
        *rows,
    ]
