"""How much memory a transfer needs: a fitted model of its peak, and what fits a budget.

One model for every role: the engine plans (untiled, or tiles of which size) and refuses what
cannot fit before any work; a worker announces its budget; the web admits a job only if a
live worker can hold it; ``stylequeue transfer`` decides on the user's own machine. Pure
Python (no TensorFlow, no settings), so the web can use it without the engine.

**The model.** VGG19's activations dominate: the backward pass keeps each layer's output
until the gradient has gone through it. Per output pixel, the forward pass up to the deepest
layer used makes ``activation_values(layers)`` values (each convolution's channels, and each
pooling's, over the 4**(block - 1) pixels one position stands for; 322 up to block5_conv2),
so the untiled peak over ``P`` pixels making ``V`` values each is (:class:`Fit`)::

    peak = max(base + P * (kept * V + 12 * vectors), P * (whole * V + 12 * vectors))

``vectors`` counts the full-image float32 RGB vectors (12 bytes a pixel) the optimiser keeps
besides the image: Adam's two moments; L-BFGS's ``history`` (m) pairs of (s, y) plus the
previous image and gradient, ``2 * m + 2``. ``base`` is the process at rest (Python,
TensorFlow, the weights); ``kept`` the bytes a value adds to it while the step is small;
``whole`` what a value costs once the step's working set (activations, their gradients,
float32 copies of the loss layers) outgrows what the process held at rest, which it then
reuses: the measured peak grows by about 1.5 KB a pixel from 512 to 1024 px and 2.1 KB from
1536 to 2048 (bfloat16). Fitted per precision and per class of CPU (``cpu``: AVX-512;
``cpu-avx2``: oneDNN's AVX2 kernels need about a third more) to the peak RSS that
``bench/engine.py --prints`` measures on the 2-core build machines (``bench/RESULTS.md``):
within 15% of the measurement from 256 to 2048 px. The model leaves out what the loop holds
while it reads losses in groups on the CPU (``worker.engine.core.GROUP_BYTES``: at most two
groups' optimiser states, 32 MiB, and only at sizes small enough for a group of two or more):
a few percent of ``base``, inside that margin.

**GPUs** (not measured here: no GPU on the build machine). The budget there is the GPU's
free memory, and TensorFlow's allocator holds what the backward pass keeps: each
convolution's output and its ReLU's, in the computing precision (2 x 4 bytes a value in
float32, 2 x 2 in bfloat16), plus cuDNN's workspace; ``GPU_FITS`` takes 10 and 6 bytes a
value (a quarter on top for the workspace and the allocator's rounding) and a base of the
weights and the kernels' scratch. Check them with ``bench/engine.py --prints`` on the GPU
before trusting a budget to the last gigabyte.

**Tiled** (``worker/engine/tiling.py``): the whole image stays on the host (image, Adam's
moments, the best image, the gradient, the content image and its content-layer targets),
and one padded tile goes through VGG19 at a time, so the peak is the host's part plus an
untiled step over the largest padded tile (on a GPU only the latter counts)::

    peak = P * (HOST_BYTES_PER_PIXEL + 4 * content target values) + peak(padded tile)

A tile's core is a multiple of ``ALIGN`` (16: VGG19's four poolings line up) and its halo
covers the deepest layer's receptive field (:func:`halo`), so every feature of the core is
the one the whole image would have.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

# ---- VGG19's shape -------------------------------------------------------------------------

CHANNELS = {1: 64, 2: 128, 3: 256, 4: 512, 5: 512}  # per block
ALIGN = 16  # tile offsets: 2**4, so the pooling grids of blocks 1-5 line up
MIN_TILE = 64  # the smallest tile core worth running (a smaller one is mostly halo)

DEVICES = ("cpu", "cpu-avx2", "gpu")  # cpu: AVX-512 (see CPU_FITS)
OPTIMIZERS = ("adam", "lbfgs")
DEFAULT_LBFGS_HISTORY = 10

# ---- fitted constants (bench/engine.py --prints, bench/RESULTS.md) ---------------------------


@dataclass(frozen=True)
class Fit:
    """One device and precision's constants: the process at rest (``base``, bytes), the bytes
    an activation value adds on top of it while the step's working set is small (``kept``),
    and the bytes a value costs once the working set is large enough to take over what the
    process held at rest (``whole``: the activations, their gradients and float32 copies)."""

    base: float
    kept: float
    whole: float

    def peak(self, pixels: float, values: float, vectors: int) -> float:
        """Peak bytes of a step over ``pixels`` making ``values`` activation values a pixel,
        with ``vectors`` full-image float32 RGB vectors of optimiser state."""
        state = FLOAT32_RGB * vectors
        return max(
            self.base + pixels * (self.kept * values + state),
            pixels * (self.whole * values + state),
        )


# CPU, peak RSS (ru_maxrss), fitted on the 2-core build machines (TF 2.21, oneDNN), one set
# per class of CPU: oneDNN picks its kernels, blocked layouts and scratch space by the
# instruction set, and the peaks differ by a third. ``cpu``: AVX-512 (with BF16: Zen 4);
# ``cpu-avx2``: AVX2 only (Zen 3). bfloat16 without hardware support is emulated (``auto``
# never picks it there) and was not measured: float32's constants stand in.
CPU_FITS = {
    "float32": Fit(base=795 * 2**20, kept=6.5, whole=8.5),
    "mixed_bfloat16": Fit(base=795 * 2**20, kept=4.7, whole=6.4),
}
_AVX2_FLOAT32 = Fit(base=1045 * 2**20, kept=11.0, whole=11.0)
CPU_AVX2_FITS = {"float32": _AVX2_FLOAT32, "mixed_bfloat16": _AVX2_FLOAT32}
# GPU, TensorFlow's allocator (see the module's docstring: derived, not measured here)
GPU_FITS = {
    "float32": Fit(base=400 * 2**20, kept=10.0, whole=10.0),
    "mixed_bfloat16": Fit(base=300 * 2**20, kept=6.0, whole=6.0),
}
# Tiled, what the host keeps for the whole image, a pixel: the image, Adam's two moments,
# the best image, the gradient and the content (float32 RGB, 12 bytes each), the uint8
# inputs, and the update's temporaries.
HOST_BYTES_PER_PIXEL = 96
FLOAT32_RGB = 12  # bytes of one full-image float32 RGB vector, a pixel


class BudgetError(ValueError):
    """A job that fits the memory budget in no way the engine can run it. The message says
    the estimate and the budget."""

    def __init__(self, estimate: int, budget: int, what: str, how: str) -> None:
        self.estimate = estimate
        self.budget = budget
        super().__init__(
            f"{what} needs about {format_bytes(estimate)} {how}, more than the memory budget "
            f"of {format_bytes(budget)}"
        )


def block(layer: str) -> int:
    """``block4_conv2`` -> 4."""
    return int(layer[len("block")])


def _conv_index(layer: str) -> int:
    return int(layer.rsplit("conv", 1)[1])


def _convs_in_block(b: int) -> int:
    return 2 if b <= 2 else 4


def deepest(layers: Iterable[str]) -> str:
    """The deepest VGG19 layer of ``layers`` (the model stops there)."""
    return max(layers, key=lambda n: (block(n), _conv_index(n)))


def _path(last: str) -> list[tuple[str, int]]:
    """The operations up to ``last``: ("conv", block) and ("pool", block) in order."""
    out: list[tuple[str, int]] = []
    for b in range(1, block(last) + 1):
        convs = _conv_index(last) if b == block(last) else _convs_in_block(b)
        out += [("conv", b)] * convs
        if b < block(last):
            out.append(("pool", b))
    return out


def activation_values(layers: Iterable[str]) -> float:
    """Activation values the forward pass makes per output pixel, up to the deepest layer."""
    total = 0.0
    for op, b in _path(deepest(layers)):
        if op == "conv":
            total += CHANNELS[b] / 4 ** (b - 1)
        else:  # the pooling's output, a quarter of its block's positions
            total += CHANNELS[b] / 4**b
    return total


def receptive_extent(layer: str) -> int:
    """Pixels beyond its own cell (2**(block - 1) px wide) that one feature of ``layer``
    depends on, on the wider side: 86 for block5_conv2. Convolutions are 3x3 "same",
    poolings 2x2 stride 2 "valid" (Keras's VGG19)."""
    lo, hi, jump = 0, 0, 1
    for op, _ in _path(layer):
        if op == "conv":
            lo, hi = lo - jump, hi + jump
        else:
            hi += jump
            jump *= 2
    return max(-lo, hi - (jump - 1))


def halo(layers: Iterable[str]) -> int:
    """A tile's halo: the deepest layer's receptive extent, rounded up to :data:`ALIGN`."""
    return ALIGN * math.ceil(receptive_extent(deepest(layers)) / ALIGN)


# ---- sizes and bytes -------------------------------------------------------------------------

_BYTES_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?)b?\s*$", re.IGNORECASE)


def parse_bytes(text: str) -> int:
    """``6GB``, ``6G``, ``512MiB``, ``1.5gb``, ``8000000000`` -> bytes (GB = 10**9, GiB =
    2**30). ValueError for anything else, or for 0."""
    m = _BYTES_RE.match(text or "")
    if not m:
        raise ValueError(f"expected a size such as 6GB or 512MiB, got {text!r}")
    number, unit, binary = float(m.group(1)), m.group(2).lower(), bool(m.group(3))
    power = "kmgt".index(unit) + 1 if unit else 0
    value = int(number * (1024 if binary else 1000) ** power)
    if value <= 0:
        raise ValueError(f"a memory budget must be above 0, got {text!r}")
    return value


def format_bytes(n: float) -> str:
    """Bytes for people: ``5.9 GB``, ``730 MB`` (decimal units, as ``parse_bytes`` reads)."""
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{int(n)} B"


def output_shape(width: int, height: int, max_size: int) -> tuple[int, int]:
    """(height, width) the engine paints: the content shrunk so its longest side is at most
    ``max_size`` (never enlarged), as ``imageio.resize_max`` does."""
    longest = max(width, height)
    if longest <= max_size:
        return height, width
    scale = max_size / longest
    return max(1, round(height * scale)), max(1, round(width * scale))


Size = int | tuple[int, int]


def _hw(size: Size) -> tuple[int, int]:
    """(height, width); an int is a square of that side (the worst case for a max_size)."""
    if isinstance(size, int):
        return size, size
    return int(size[0]), int(size[1])


# ---- the model -------------------------------------------------------------------------------


def _layers_of(params: Any) -> tuple[list[str], list[str]]:
    """(content layers, all layers) with a weight above 0, as the engine uses them."""
    content = [n for n, w in params.content_layers if w > 0]
    style = [n for n, w in params.style_layers if w > 0]
    return content, content + style


def _optimizer_of(params: Any) -> str:
    """The job's optimiser: ``params.optimizer`` where the parameters have one, else Adam."""
    return str(getattr(params, "optimizer", None) or "adam")


def optimizer_vectors(optimizer: str, history: int = DEFAULT_LBFGS_HISTORY) -> int:
    """Full-image float32 vectors an optimiser keeps besides the image: Adam its two
    moments; L-BFGS ``history`` pairs (s, y) and the previous image and gradient."""
    if optimizer == "adam":
        return 2
    if optimizer == "lbfgs":
        if history < 1:
            raise ValueError(f"L-BFGS history must be at least 1, got {history}")
        return 2 * history + 2
    raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {optimizer!r}")


def _fit(precision: str, device: str) -> Fit:
    if device not in DEVICES:
        raise ValueError(f"device must be one of {', '.join(DEVICES)}, got {device!r}")
    fits_ = {"gpu": GPU_FITS, "cpu-avx2": CPU_AVX2_FITS}.get(device, CPU_FITS)
    if precision not in fits_:
        raise ValueError(f"precision must be one of {', '.join(fits_)}, got {precision!r}")
    return fits_[precision]


def estimate_memory(
    size: Size,
    params: Any,
    precision: str | None = None,
    optimizer: str | None = None,
    *,
    history: int | None = None,
    device: str = "cpu",
) -> int:
    """Peak bytes of an untiled transfer painting ``size`` ((height, width), or a square's
    side) with ``params`` (a TransferParams: its layers; its precision and optimizer unless
    given). ``history``: L-BFGS's m (default: the parameters' ``lbfgs_history``).
    ``device``: one of :data:`DEVICES` (a CPU's peak RSS, or a GPU allocator's peak)."""
    h, w = _hw(size)
    precision = precision or params.precision
    optimizer = optimizer or _optimizer_of(params)
    _, layers = _layers_of(params)
    if history is None:
        history = int(getattr(params, "lbfgs_history", DEFAULT_LBFGS_HISTORY))
    vectors = optimizer_vectors(optimizer, history)
    return int(_fit(precision, device).peak(h * w, activation_values(layers), vectors))


@dataclass(frozen=True)
class Tiles:
    """A tiling of an image: cores of at most ``core`` px (multiples of ALIGN), each run
    with ``halo`` px of context on every side the image has."""

    core: int
    halo: int
    rows: tuple[tuple[int, int], ...]  # core row ranges [start, end)
    cols: tuple[tuple[int, int], ...]

    @property
    def count(self) -> int:
        return len(self.rows) * len(self.cols)

    def padded(self, start: int, end: int, length: int) -> tuple[int, int]:
        """The range a core [start, end) is run with: its halo, clipped to the image."""
        return max(0, start - self.halo), min(length, end + self.halo)

    def largest_padded(self, h: int, w: int) -> tuple[int, int]:
        """The largest padded tile's (height, width)."""
        ph = max(b - a for a, b in (self.padded(s, e, h) for s, e in self.rows))
        pw = max(b - a for a, b in (self.padded(s, e, w) for s, e in self.cols))
        return ph, pw


def split(length: int, core: int) -> tuple[tuple[int, int], ...]:
    """[start, end) ranges covering ``length`` in the fewest cores of at most ``core`` px,
    as even as the alignment allows (every start a multiple of ALIGN)."""
    core = max(ALIGN, core - core % ALIGN)
    n = math.ceil(length / core)
    step = ALIGN * math.ceil(length / n / ALIGN)
    starts = list(range(0, length, step))
    return tuple((s, min(length, s + step)) for s in starts)


def make_tiles(size: Size, core: int, layers: Sequence[str]) -> Tiles:
    h, w = _hw(size)
    return Tiles(core=core, halo=halo(layers), rows=split(h, core), cols=split(w, core))


def estimate_tiled_memory(
    size: Size,
    core: int,
    params: Any,
    precision: str | None = None,
    *,
    device: str = "cpu",
) -> int:
    """Peak bytes of a tiled transfer (Adam; the optimiser state lives on the host) painting
    ``size`` in cores of at most ``core`` px."""
    h, w = _hw(size)
    precision = precision or params.precision
    content_layers, layers = _layers_of(params)
    tiles = make_tiles((h, w), core, layers)
    ph, pw = tiles.largest_padded(h, w)
    tile = _fit(precision, device).peak(ph * pw, activation_values(layers), 2)
    if device == "gpu":  # the image and Adam's state are in the host's memory, not the GPU's
        return int(tile)
    targets = sum(CHANNELS[block(n)] / 4 ** (block(n) - 1) for n in content_layers) * 4
    return int(h * w * (HOST_BYTES_PER_PIXEL + targets) + tile)


@dataclass(frozen=True)
class Plan:
    """How a job runs within a budget: untiled (``core`` None) or in cores of ``core`` px;
    ``estimate`` is the model's peak for that way."""

    core: int | None
    estimate: int
    untiled_estimate: int

    @property
    def tiled(self) -> bool:
        return self.core is not None


def plan(
    size: Size,
    params: Any,
    budget: int | None,
    precision: str | None = None,
    optimizer: str | None = None,
    *,
    history: int | None = None,
    device: str = "cpu",
    core: int | None = None,
) -> Plan:
    """Untiled if it fits ``budget`` (None: no budget), else the largest tile core that
    fits; ``core`` forces tiles of that size. Raises :class:`BudgetError` when nothing fits.

    Tiles run Adam only: its state is per pixel, so it updates the image wherever the
    gradient is whole. L-BFGS above the budget is refused rather than run another way: its
    line search evaluates the loss at trial points, each one a whole pass over every tile,
    and its history is of whole-image vectors (``2 * history + 2`` of them, on the host), so
    a tiled L-BFGS would be several times slower per iteration than tiled Adam and need
    more host memory; the message says to use Adam for that size.
    """
    h, w = _hw(size)
    optimizer = optimizer or _optimizer_of(params)
    untiled = estimate_memory(size, params, precision, optimizer, history=history, device=device)
    if core is None and (budget is None or untiled <= budget):
        return Plan(None, untiled, untiled)
    if optimizer != "adam":
        if core is not None:
            raise ValueError(f"only Adam runs in tiles, not {optimizer}")
        raise BudgetError(
            untiled, budget or 0, f"a {w}x{h} px {optimizer} job",
            "(only Adam runs in tiles: choose optimizer adam for this size)",
        )  # fmt: skip
    if core is None:
        core = largest_core((h, w), params, budget or 0, precision, device=device)
        if core is None:
            smallest = estimate_tiled_memory((h, w), MIN_TILE, params, precision, device=device)
            how = "even in the smallest tiles" if smallest < untiled else "untiled or in tiles"
            need = min(smallest, untiled)
            raise BudgetError(need, budget or 0, f"a {w}x{h} px job", how)
    estimate = estimate_tiled_memory((h, w), core, params, precision, device=device)
    return Plan(core, estimate, untiled)


def largest_core(
    size: Size, params: Any, budget: int, precision: str | None = None, *, device: str = "cpu"
) -> int | None:
    """The largest tile core (a multiple of ALIGN, at least MIN_TILE) whose tiled run fits
    ``budget``; None when not even MIN_TILE does."""
    h, w = _hw(size)
    low, high = MIN_TILE // ALIGN, max(MIN_TILE, max(h, w)) // ALIGN + 1
    if estimate_tiled_memory((h, w), low * ALIGN, params, precision, device=device) > budget:
        return None
    while high - low > 1:  # the estimate grows with the core
        mid = (low + high) // 2
        fits = estimate_tiled_memory((h, w), mid * ALIGN, params, precision, device=device)
        low, high = (mid, high) if fits <= budget else (low, mid)
    return low * ALIGN


def fits(
    size: Size,
    params: Any,
    budget: int,
    precision: str | None = None,
    optimizer: str | None = None,
    *,
    history: int | None = None,
    device: str = "cpu",
) -> bool:
    """Can a machine with ``budget`` bytes paint ``size``, untiled or tiled?"""
    try:
        plan(size, params, budget, precision, optimizer, history=history, device=device)
    except BudgetError:
        return False
    return True


def largest_size(
    budget: int,
    params: Any,
    precision: str | None = None,
    optimizer: str | None = None,
    *,
    history: int | None = None,
    device: str = "cpu",
    aspect: float = 1.0,
    cap: int = 1 << 15,
) -> int:
    """The largest longest side (at most ``cap``) a machine with ``budget`` bytes can paint,
    untiled or tiled, for an image ``aspect`` (short side / long side; 1: a square, the
    worst case); 0 when not even 16 px fits."""

    def ok(side: int) -> bool:
        short = max(1, round(side * aspect))
        return fits((short, side), params, budget, precision, optimizer, history=history,
                    device=device)  # fmt: skip

    if not ok(16):
        return 0
    low, high = 16, cap + 1
    if ok(cap):
        return cap
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (mid, high) if ok(mid) else (low, mid)
    return low


def largest_untiled_size(
    budget: int,
    params: Any,
    precision: str | None = None,
    optimizer: str | None = None,
    *,
    history: int | None = None,
    device: str = "cpu",
    aspect: float = 1.0,
    cap: int = 1 << 15,
) -> int:
    """The largest longest side (at most ``cap``) painted without tiles within ``budget``;
    0 when not even 1 px fits."""
    low, high = 0, cap + 1  # the estimate grows with the side
    while high - low > 1:
        mid = (low + high) // 2
        short = max(1, round(mid * aspect))
        need = estimate_memory((short, mid), params, precision, optimizer, history=history,
                               device=device)  # fmt: skip
        low, high = (mid, high) if need <= budget else (low, mid)
    return low
