"""Style-transfer parameters: one validated, immutable object shared by web, worker and CLI.

Pure Python (no TensorFlow), so the web checks a request with exactly the rules the engine
runs under. Every error names its field and the allowed range.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from stylequeue.shared.settings import Limits
from stylequeue.shared.text import parse_bool

VGG19_LAYERS: tuple[str, ...] = (
    "block1_conv1", "block1_conv2",
    "block2_conv1", "block2_conv2",
    "block3_conv1", "block3_conv2", "block3_conv3", "block3_conv4",
    "block4_conv1", "block4_conv2", "block4_conv3", "block4_conv4",
    "block5_conv1", "block5_conv2", "block5_conv3", "block5_conv4",
)  # fmt: skip
WEIGHTS_MODES = ("imagenet", "random")
PRECISIONS = ("float32", "mixed_bfloat16")
INITS = ("content", "noise")
MAX_SEED = 2**31 - 1


class ParamError(ValueError):
    """A parameter is wrong. ``field`` names it, as the API and CLI call it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


LayerWeights = tuple[tuple[str, float], ...]

_TUTORIAL_STYLE: LayerWeights = tuple((f"block{i}_conv1", 1.0) for i in range(1, 6))


@dataclass(frozen=True)
class TransferParams:
    """Everything that decides a transfer's output (with the inputs and the machine).

    Pixels are optimised in [0, 1] RGB; the extractor converts to VGG's caffe input inside
    the model. ``learning_rate`` is therefore on the [0, 1] scale.
    """

    preset: str = "default"
    iterations: int = 300
    max_size: int = 512
    content_weight: float = 1e4
    style_weight: float = 1e-2
    tv_weight: float = 30.0
    learning_rate: float = 0.02
    beta_1: float = 0.99
    beta_2: float = 0.999
    epsilon: float = 0.1
    content_layers: LayerWeights = (("block5_conv2", 1.0),)
    style_layers: LayerWeights = _TUTORIAL_STYLE
    style_blend: tuple[float, ...] | None = None  # one weight per style image; None = equal
    style_scale: float = 1.0
    preserve_colors: bool = False
    init: str = "content"
    seed: int = 0
    snapshot_every: int = 50  # 0 = no snapshots
    precision: str = "float32"
    weights: str | None = None  # None = the worker's STYLEQUEUE_VGG19_WEIGHTS

    # ---- construction -------------------------------------------------------------------

    @classmethod
    def from_inputs(
        cls,
        data: Mapping[str, Any] | None = None,
        *,
        limits: Limits | None = None,
        n_styles: int = 1,
        allow_weight_paths: bool = False,
    ) -> TransferParams:
        """Build from user input: strings (form fields, CLI) or JSON values.

        ``preset`` picks the base; other keys override it. Unknown keys are errors.
        """
        data = dict(data or {})
        preset = str(data.pop("preset", "default") or "default").strip()
        if preset not in PRESETS:
            raise ParamError(
                "preset", f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}"
            )
        known = {f.name for f in fields(cls)} - {"preset"}
        for key in data:
            if key not in known:
                raise ParamError(key, f"unknown parameter; known: {', '.join(sorted(known))}")
        values = {k: _coerce(k, v) for k, v in data.items() if v is not None and v != ""}
        params = replace(PRESETS[preset], **values)
        params.validate(limits=limits, n_styles=n_styles, allow_weight_paths=allow_weight_paths)
        return params

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TransferParams:
        """Inverse of :meth:`to_dict` (what the database stores); not re-checked against limits."""
        values = dict(data)
        for key in ("content_layers", "style_layers"):
            if key in values:
                values[key] = tuple((str(n), float(w)) for n, w in values[key])
        if values.get("style_blend") is not None:
            values["style_blend"] = tuple(float(w) for w in values["style_blend"])
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["content_layers"] = [list(x) for x in self.content_layers]
        out["style_layers"] = [list(x) for x in self.style_layers]
        out["style_blend"] = list(self.style_blend) if self.style_blend is not None else None
        return out

    # ---- validation ---------------------------------------------------------------------

    def validate(
        self,
        *,
        limits: Limits | None = None,
        n_styles: int = 1,
        allow_weight_paths: bool = False,
    ) -> TransferParams:
        limits = limits or Limits()
        _int_range("iterations", self.iterations, 1, limits.max_iterations)
        _int_range("max_size", self.max_size, 16, limits.max_size)
        for name in ("content_weight", "style_weight", "tv_weight"):
            _float_range(name, getattr(self, name), 0.0, 1e12)
        if self.content_weight == 0 and self.style_weight == 0:
            raise ParamError("style_weight", "content_weight and style_weight cannot both be 0")
        _float_range("learning_rate", self.learning_rate, 1e-6, 100.0, low_open=False)
        _float_range("beta_1", self.beta_1, 0.0, 0.999999)
        _float_range("beta_2", self.beta_2, 0.0, 0.999999)
        _float_range("epsilon", self.epsilon, 1e-10, 10.0)
        _layers("content_layers", self.content_layers)
        _layers("style_layers", self.style_layers)
        if self.style_blend is not None:
            if len(self.style_blend) != n_styles:
                raise ParamError(
                    "style_blend",
                    f"give one weight per style image ({n_styles}), got {len(self.style_blend)}",
                )
            for w in self.style_blend:
                _float_range("style_blend", w, 0.0, 1e6)
            if sum(self.style_blend) <= 0:
                raise ParamError("style_blend", "at least one blend weight must be above 0")
        if not 1 <= n_styles <= limits.max_styles:
            raise ParamError("style", f"give 1 to {limits.max_styles} style images, got {n_styles}")
        _float_range("style_scale", self.style_scale, 0.1, 4.0)
        if not isinstance(self.preserve_colors, bool):
            raise ParamError("preserve_colors", "must be true or false")
        _choice("init", self.init, INITS)
        _int_range("seed", self.seed, 0, MAX_SEED)
        _int_range("snapshot_every", self.snapshot_every, 0, limits.max_iterations)
        _choice("precision", self.precision, PRECISIONS)
        if self.weights is not None and self.weights not in WEIGHTS_MODES:
            if not allow_weight_paths:
                raise ParamError("weights", f"must be one of {', '.join(WEIGHTS_MODES)}")
            if not str(self.weights).endswith((".h5", ".keras")):
                raise ParamError(
                    "weights", "must be imagenet, random or a path to a Keras .h5/.keras file"
                )
        return self

    def blend(self, n_styles: int) -> tuple[float, ...]:
        """Normalised style blend weights (sum 1)."""
        raw = self.style_blend or (1.0,) * n_styles
        total = float(sum(raw))
        return tuple(float(w) / total for w in raw)


# ---- presets ------------------------------------------------------------------------------

PRESETS: dict[str, TransferParams] = {
    # The TensorFlow tutorial's known-good balance on [0, 1] pixels.
    "default": TransferParams(preset="default"),
    # Form presets: the same balance, sized for time.
    "quick": TransferParams(preset="quick", iterations=100, max_size=256, snapshot_every=10),
    "balanced": TransferParams(preset="balanced", iterations=300, max_size=384, snapshot_every=25),
    "high": TransferParams(preset="high", iterations=1000, max_size=512, snapshot_every=50),
    # The seed article's numbers: Adam lr 7 on 0-255 pixels (= 7/255 on our [0, 1] scale),
    # content 10, style 1000, 50 iterations, content block5_conv2, default Adam otherwise.
    "seed": TransferParams(
        preset="seed",
        iterations=50,
        content_weight=10.0,
        style_weight=1000.0,
        tv_weight=0.0,
        learning_rate=7.0 / 255.0,
        beta_1=0.9,
        beta_2=0.999,
        epsilon=1e-7 * 255.0,  # Adam eps scales with the gradient: x255 on [0, 1] pixels
        snapshot_every=10,
    ),
}


# ---- coercion helpers ---------------------------------------------------------------------


def _coerce(key: str, value: Any) -> Any:
    """Turn a form string / JSON value into the field's type, or raise ParamError."""
    kind = {f.name: f.type for f in fields(TransferParams)}[key]
    try:
        if kind == "int":
            if isinstance(value, bool):
                raise ValueError
            if isinstance(value, float):
                if not value.is_integer():
                    raise ValueError
                return int(value)
            return int(str(value).strip())
        if kind == "float":
            if isinstance(value, bool):
                raise ValueError
            return float(str(value).strip()) if isinstance(value, str) else float(value)
        if kind == "bool":
            return parse_bool(value, key)
        if kind == "LayerWeights":
            return _parse_layers(key, value)
        if kind == "tuple[float, ...] | None":
            items = value.split(",") if isinstance(value, str) else list(value)
            return tuple(float(str(x).strip()) for x in items)
        return str(value).strip()
    except ParamError:
        raise
    except (TypeError, ValueError):
        expected = {"int": "an integer", "float": "a number", "bool": "true or false"}.get(
            kind, "a valid value"
        )
        raise ParamError(key, f"must be {expected}, got {value!r}") from None


def _parse_layers(key: str, value: Any) -> LayerWeights:
    """``"block1_conv1:1,block2_conv1:0.5"`` or ``[["block1_conv1", 1.0], ...]`` or names."""
    items = value.split(",") if isinstance(value, str) else list(value)
    out: list[tuple[str, float]] = []
    for item in items:
        if isinstance(item, str):
            name, _, weight = item.strip().partition(":")
            out.append((name.strip(), float(weight) if weight else 1.0))
        else:
            name, weight = item
            out.append((str(name), float(weight)))
    return tuple(out)


def _int_range(name: str, value: Any, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ParamError(name, f"must be an integer from {low} to {high}")
    if not low <= value <= high:
        raise ParamError(name, f"must be from {low} to {high}, got {value}")


def _float_range(name: str, value: Any, low: float, high: float, *, low_open: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ParamError(name, f"must be a number from {low:g} to {high:g}")
    if not math.isfinite(value):
        raise ParamError(name, f"must be a finite number, got {value}")
    if value < low or value > high or (low_open and value == low):
        raise ParamError(name, f"must be from {low:g} to {high:g}, got {value:g}")


def _choice(name: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ParamError(name, f"must be one of {', '.join(allowed)}, got {value!r}")


def _layers(name: str, layers: LayerWeights) -> None:
    if not layers:
        raise ParamError(name, "give at least one VGG19 layer")
    seen = set()
    for layer, weight in layers:
        if layer not in VGG19_LAYERS:
            raise ParamError(
                name, f"unknown VGG19 layer {layer!r}; choose from {', '.join(VGG19_LAYERS)}"
            )
        if layer in seen:
            raise ParamError(name, f"layer {layer!r} is listed twice")
        seen.add(layer)
        _float_range(name, weight, 0.0, 1e6)
    if sum(w for _, w in layers) <= 0:
        raise ParamError(name, "at least one layer weight must be above 0")
