"""Style-transfer parameters: one table, one validated immutable object for web, worker, CLI.

Every field of :class:`TransferParams` carries its row of the **parameter table**
(:class:`Param`: type, intrinsic range or choices, default, label, hint, API note, and the
deployment limit that caps it, if any); :data:`PARAMETERS` is that table by name. Made from
it, and from nothing else:

- validation: :meth:`TransferParams.validate` and :meth:`TransferParams.from_inputs`;
- ``GET /api/v1/config`` (``web/config_info.py``);
- the HTML form's inputs: labels, min/max/step, values, hints (``web/form_spec.py``);
- which parameters a submit may set (``web/submission.py``).

Two questions are kept apart:

- *Is this value valid?* The intrinsic range: a type and its domain. :meth:`validate` checks
  it wherever parameters are used, the engine included.
- *Does this server allow it?* The deployment's :class:`~stylequeue.shared.settings.Limits`
  (``STYLEQUEUE_MAX_*``). :meth:`check_limits` applies them when the service takes a job
  (``from_inputs(limits=...)`` at submit time). The CLI, on the user's own machine, is not
  held to a service's caps.

The table has a second part: the **job options** (:class:`JobOptions`), inputs of a job that
do not change its picture (``webhook``, ``webhook_events``). Their rows are in
:data:`PARAMETERS` with the transfer's (the API, ``/config`` and the docs are made from one
table); :data:`TRANSFER_PARAMETERS` is the transfer's part alone, which the engine sees.

Pure Python (no TensorFlow). Every error names its field and the allowed range.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from types import MappingProxyType
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from stylequeue.shared.bounds import MAX_ITERATIONS, MAX_SIZE, MAX_STYLES
from stylequeue.shared.text import parse_bool, parse_decimal, parse_int

if TYPE_CHECKING:  # a deployment's caps are passed in; the engine never loads settings
    from stylequeue.shared.settings import Limits

VGG19_LAYERS: tuple[str, ...] = (
    "block1_conv1", "block1_conv2",
    "block2_conv1", "block2_conv2",
    "block3_conv1", "block3_conv2", "block3_conv3", "block3_conv4",
    "block4_conv1", "block4_conv2", "block4_conv3", "block4_conv4",
    "block5_conv1", "block5_conv2", "block5_conv3", "block5_conv4",
)  # fmt: skip
WEIGHTS_MODES = ("imagenet", "random")
WEIGHTS_FILE_SUFFIXES = (".h5", ".keras")
PRECISIONS = ("float32", "mixed_bfloat16")
INITS = ("content", "noise")
OPTIMIZERS = ("adam", "lbfgs")
MAX_SCALES = 4  # coarse-to-fine: up to 3 halvings below the size asked for
MAX_LBFGS_HISTORY = 100
PRESET_NAMES = ("default", "quick", "balanced", "high", "seed")  # PRESETS, below
MAX_SEED = 2**31 - 1
# Intrinsic upper bounds where the domain itself has none: MAX_ITERATIONS, MAX_SIZE and
# MAX_STYLES live in shared.bounds (settings caps the deployment limits by them too).
MAX_WEIGHT = 1e12  # loss weights
MAX_BLEND = 1e6  # style blend and layer weights


class ParamError(ValueError):
    """A parameter is wrong. ``field`` names it, as the API and CLI call it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


LayerWeights = tuple[tuple[str, float], ...]

_TUTORIAL_STYLE: LayerWeights = tuple((f"block{i}_conv1", 1.0) for i in range(1, 6))


# ---- the parameter table ------------------------------------------------------------------


@dataclass(frozen=True)
class Param:
    """One row of the parameter table: everything known about one parameter.

    ``kind`` is ``int``, ``float``, ``bool``, ``choice``, ``float_list`` (one number per
    style image), ``layers`` (VGG19 layer names with weights), ``url`` (an http(s) URL of
    at most ``high`` characters) or ``choice_list`` (some of ``choices``, comma-separated).
    ``low``/``high`` are the intrinsic inclusive bounds (of each number, for ``float_list``
    and ``layers``).
    """

    kind: str
    default: Any
    low: int | float | None = None
    high: int | float | None = None
    choices: tuple[str, ...] = ()
    choice_labels: tuple[str, ...] = ()  # for people, one per choice
    null_label: str = ""  # None is allowed and means this (for people); "" = not allowed
    path_suffixes: tuple[str, ...] = ()  # a file path is allowed too, where paths are
    limit: str | None = None  # the Limits field that caps ``high`` on a server
    public: bool = True  # the API and the form may set it; False: engine internals
    label: str = ""
    hint: str = ""  # for people; "{low}" and "{high}" become the range in force
    note: str = ""  # for API clients (``GET /api/v1/config``)
    name: str = ""  # the field's name, filled in by PARAMETERS

    def high_within(self, limits: Limits | None) -> int | float | None:
        """The upper bound in force: the intrinsic one, or a server's limit where lower."""
        if self.limit is None or limits is None or self.high is None:
            return self.high
        cap: int = getattr(limits, self.limit)  # a Limits field, all of them ints
        return min(self.high, cap)

    def hint_for(self, limits: Limits | None) -> str:
        return self.hint.format(low=fmt(self.low), high=fmt(self.high_within(limits)))


def fmt(value: Any) -> str:
    """A bound or value as people read it: ``16``, ``0.1``, ``1e+12``."""
    return f"{value:g}" if isinstance(value, float) else str(value)


def _row(kind: str, **row: Any) -> dict[str, Any]:
    """A TransferParams field's table row (its default is the field's)."""
    return {"param": {"kind": kind, **row}}


@dataclass(frozen=True)
class TransferParams:
    """Everything that decides a transfer's output (with the inputs and the machine).

    Pixels are optimised in [0, 1] RGB; the extractor converts to VGG's caffe input inside
    the model. ``learning_rate`` is therefore on the [0, 1] scale.
    """

    preset: str = field(
        default="default",
        metadata=_row(
            "choice",
            choices=PRESET_NAMES,
            label="Preset",
            hint="A known-good set of values; the other parameters override it.",
        ),
    )
    iterations: int = field(
        default=300,
        metadata=_row(
            "int",
            low=1,
            high=MAX_ITERATIONS,
            limit="max_iterations",
            label="Iterations",
            hint="More steps, more painterly. {low} to {high}.",
        ),
    )
    max_size: int = field(
        default=512,
        metadata=_row(
            "int",
            low=16,
            high=MAX_SIZE,
            limit="max_size",
            label="Size (longest side, px)",
            hint="{low} to {high}. Bigger is slower.",
        ),
    )
    content_weight: float = field(
        default=1e4,
        metadata=_row(
            "float",
            low=0.0,
            high=MAX_WEIGHT,
            label="Content weight",
            hint="Higher: the photo stays more recognisable.",
        ),
    )
    style_weight: float = field(
        default=1e-2,
        metadata=_row(
            "float",
            low=0.0,
            high=MAX_WEIGHT,
            label="Style weight",
            hint="Higher: more painting, less photo.",
        ),
    )
    tv_weight: float = field(
        default=30.0,
        metadata=_row(
            "float",
            low=0.0,
            high=MAX_WEIGHT,
            label="Smoothness",
            hint="Total-variation weight. Higher: fewer speckles.",
        ),
    )
    learning_rate: float = field(
        default=0.02,
        metadata=_row(
            "float",
            low=1e-6,
            high=100.0,
            label="Learning rate",
            hint="Optimiser step size (pixels in 0-1).",
        ),
    )
    optimizer: str = field(
        default="adam",
        metadata=_row(
            "choice",
            choices=OPTIMIZERS,
            choice_labels=("Adam", "L-BFGS"),
            label="Optimiser",
            hint="How the picture is improved each iteration.",
        ),
    )
    lbfgs_history: int = field(
        default=10,
        metadata=_row(
            "int",
            low=1,
            high=MAX_LBFGS_HISTORY,
            public=False,
            label="L-BFGS history",
            hint="Update pairs L-BFGS keeps (each two full-image float32 arrays).",
        ),
    )
    scales: int = field(
        default=1,
        metadata=_row(
            "int",
            low=1,
            high=MAX_SCALES,
            label="Scales",
            hint="Coarse to fine: paint at 1/2, 1/4... of the size first ({low} to {high}).",
            note="1 = paint at the full size only",
        ),
    )
    beta_1: float = field(
        default=0.99,
        metadata=_row(
            "float",
            low=0.0,
            high=0.999999,
            public=False,
            label="Adam beta 1",
            hint="Decay of Adam's running mean of the gradient.",
        ),
    )
    beta_2: float = field(
        default=0.999,
        metadata=_row(
            "float",
            low=0.0,
            high=0.999999,
            public=False,
            label="Adam beta 2",
            hint="Decay of Adam's running mean of the squared gradient.",
        ),
    )
    epsilon: float = field(
        default=0.1,
        metadata=_row(
            "float",
            low=1e-10,
            high=10.0,
            public=False,
            label="Adam epsilon",
            hint="Adam's denominator floor, on the gradient's scale.",
        ),
    )
    content_layers: LayerWeights = field(
        default=(("block5_conv2", 1.0),),
        metadata=_row(
            "layers",
            low=0.0,
            high=MAX_BLEND,
            choices=VGG19_LAYERS,
            public=False,
            label="Content layers",
            hint="VGG19 layers (name:weight) the content loss compares.",
        ),
    )
    style_layers: LayerWeights = field(
        default=_TUTORIAL_STYLE,
        metadata=_row(
            "layers",
            low=0.0,
            high=MAX_BLEND,
            choices=VGG19_LAYERS,
            public=False,
            label="Style layers",
            hint="VGG19 layers (name:weight) whose Gram matrices the style loss compares.",
        ),
    )
    style_blend: tuple[float, ...] | None = field(
        default=None,
        metadata=_row(
            "float_list",
            low=0.0,
            high=MAX_BLEND,
            null_label="Equal weights",
            label="Style blend",
            hint="One weight per style image, e.g. 0.7,0.3.",
            note="comma-separated, one weight per style image",
        ),
    )
    style_scale: float = field(
        default=1.0,
        metadata=_row(
            "float",
            low=0.1,
            high=4.0,
            label="Style scale",
            hint="Size of the brush strokes, {low} to {high}.",
        ),
    )
    preserve_colors: bool = field(
        default=False,
        metadata=_row(
            "bool",
            label="Keep the photo's colours",
            hint="Copy only the brush strokes, not the palette.",
        ),
    )
    init: str = field(
        default="content",
        metadata=_row(
            "choice",
            choices=INITS,
            label="Start from",
            hint="The picture the optimisation starts from.",
        ),
    )
    seed: int = field(
        default=0,
        metadata=_row(
            "int",
            low=0,
            high=MAX_SEED,
            label="Seed",
            hint="Same seed and inputs: same picture.",
        ),
    )
    snapshot_every: int = field(
        default=50,
        metadata=_row(
            "int",
            low=0,
            high=MAX_ITERATIONS,
            limit="max_iterations",
            label="Snapshot every",
            hint="Iterations between saved frames (0: none).",
            note="0 = no snapshots",
        ),
    )
    precision: str = field(
        default="float32",
        metadata=_row(
            "choice",
            choices=PRECISIONS,
            public=False,
            label="Precision",
            hint="Number format of the computation.",
        ),
    )
    weights: str | None = field(
        default=None,
        metadata=_row(
            "choice",
            choices=WEIGHTS_MODES,
            choice_labels=("ImageNet (real style transfer)", "Random (testing only)"),
            null_label="Worker default",
            path_suffixes=WEIGHTS_FILE_SUFFIXES,
            label="Network weights",
            hint="What the VGG19 network was trained on.",
            note="empty = the workers' configured weights",
        ),
    )  # None = the worker's STYLEQUEUE_VGG19_WEIGHTS

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

        ``preset`` picks the base; other keys override it. Unknown keys are errors. The
        result is valid (:meth:`validate`) and, given a server's ``limits``, allowed there
        (:meth:`check_limits`); without ``limits`` (the CLI) no service caps apply.
        """
        data = dict(data or {})
        preset = str(data.pop("preset", "default") or "default").strip()
        if preset not in PRESETS:
            raise ParamError(
                "preset", f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}"
            )
        known = set(TRANSFER_PARAMETERS) - {"preset"}
        for key in data:
            if key not in known:
                raise ParamError(key, f"unknown parameter; known: {', '.join(sorted(known))}")
        values = {k: _coerce(k, v) for k, v in data.items() if v is not None and v != ""}
        params = replace(PRESETS[preset], **values)
        params.validate(n_styles=n_styles, allow_weight_paths=allow_weight_paths)
        if limits is not None:
            params.check_limits(limits, n_styles=n_styles)
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
        return cls(**{k: v for k, v in values.items() if k in TRANSFER_PARAMETERS})

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["content_layers"] = [list(x) for x in self.content_layers]
        out["style_layers"] = [list(x) for x in self.style_layers]
        out["style_blend"] = list(self.style_blend) if self.style_blend is not None else None
        return out

    # ---- validation ---------------------------------------------------------------------

    def validate(self, *, n_styles: int = 1, allow_weight_paths: bool = False) -> TransferParams:
        """Is this valid? Every parameter against its row's intrinsic range, then the rules
        that tie parameters together. No deployment limits: see :meth:`check_limits`."""
        for param in TRANSFER_PARAMETERS.values():
            _CHECKS[param.kind](param, getattr(self, param.name), allow_weight_paths)
        if self.content_weight == 0 and self.style_weight == 0:
            raise ParamError("style_weight", "content_weight and style_weight cannot both be 0")
        if self.style_blend is not None:
            if len(self.style_blend) != n_styles:
                raise ParamError(
                    "style_blend",
                    f"give one weight per style image ({n_styles}), got {len(self.style_blend)}",
                )
            if sum(self.style_blend) <= 0:
                raise ParamError("style_blend", "at least one blend weight must be above 0")
        if self.scales > self.iterations:
            raise ParamError(
                "scales", f"{self.scales} scales need at least {self.scales} iterations"
            )
        coarsest = self.max_size // 2 ** (self.scales - 1)
        if coarsest < PARAMETERS["max_size"].low:
            raise ParamError(
                "scales",
                f"{self.scales} scales start at {coarsest} px, below "
                f"{PARAMETERS['max_size'].low}: use fewer scales or a larger max_size",
            )
        if not 1 <= n_styles <= MAX_STYLES:
            raise ParamError("style", f"give 1 to {MAX_STYLES} style images, got {n_styles}")
        return self

    def check_limits(self, limits: Limits, *, n_styles: int = 1) -> TransferParams:
        """Does this server allow it? The deployment's caps (the rows' ``limit``), applied by
        the service when it takes a job. Assumes :meth:`validate` passed."""
        for param in TRANSFER_PARAMETERS.values():
            if param.limit is None:
                continue
            cap = param.high_within(limits)
            value = getattr(self, param.name)
            if cap is not None and value > cap:
                raise ParamError(
                    param.name,
                    f"must be from {fmt(param.low)} to {fmt(cap)} on this server, got {value}",
                )
        if n_styles > limits.max_styles:
            raise ParamError(
                "style",
                f"give 1 to {limits.max_styles} style images on this server, got {n_styles}",
            )
        return self

    def blend(self, n_styles: int) -> tuple[float, ...]:
        """Normalised style blend weights (sum 1)."""
        raw = self.style_blend or (1.0,) * n_styles
        total = float(sum(raw))
        return tuple(float(w) / total for w in raw)


TRANSFER_PARAMETERS: Mapping[str, Param] = MappingProxyType({
    f.name: Param(name=f.name, default=f.default, **f.metadata["param"])
    for f in fields(TransferParams)
})  # fmt: skip
"""The transfer's part of the table, in field order: what decides the picture."""


# ---- job options: inputs of a job that do not change its picture ----------------------------

WEBHOOK_EVENTS = ("started", "progress", "completed")  # completed: succeeded, failed, canceled
MAX_URL_CHARS = 2048
URL_SCHEMES = ("https", "http")  # http only where the deployment allows it (webhook_targets)


@dataclass(frozen=True)
class JobOptions:
    """A job's inputs besides its picture's: where to tell its events. The intrinsic checks
    are here; whether this server may call the URL (https only, no private address) is
    ``shared.webhook_targets``'s question, asked at submit and again at each delivery."""

    webhook: str | None = field(
        default=None,
        metadata=_row(
            "url",
            high=MAX_URL_CHARS,
            choices=URL_SCHEMES,
            null_label="No webhook",
            label="Webhook URL",
            hint="Told of the job's events by a signed POST (Standard Webhooks).",
            note="https URL POSTed the job JSON plus its event, signed (Standard Webhooks)",
        ),
    )
    webhook_events: tuple[str, ...] = field(
        default=WEBHOOK_EVENTS,
        metadata=_row(
            "choice_list",
            choices=WEBHOOK_EVENTS,
            label="Webhook events",
            hint="Which events to send; completed is succeeded, failed or canceled.",
            note="comma-separated; completed = succeeded, failed or canceled; default all",
        ),
    )

    @classmethod
    def from_inputs(cls, data: Mapping[str, Any] | None = None) -> JobOptions:
        """Build from form strings or JSON values; unknown keys are errors, empty values
        mean the default. Events without a URL are an error (nothing would send them)."""
        data = dict(data or {})
        for key in data:
            if key not in JOB_PARAMETERS:
                raise ParamError(key, f"unknown job option; known: {', '.join(JOB_PARAMETERS)}")
        values = {k: _coerce(k, v) for k, v in data.items() if v is not None and v != ""}
        options = cls(**values)
        for param in JOB_PARAMETERS.values():
            _CHECKS[param.kind](param, getattr(options, param.name), False)
        if options.webhook is None and "webhook_events" in values:
            raise ParamError("webhook_events", "give a webhook URL to send the events to")
        return options

    def to_columns(self) -> dict[str, Any]:
        """The job row's columns (``Job.webhook_url``, ``Job.webhook_events``)."""
        if self.webhook is None:
            return {"webhook_url": None, "webhook_events": None}
        return {"webhook_url": self.webhook, "webhook_events": list(self.webhook_events)}


JOB_PARAMETERS: Mapping[str, Param] = MappingProxyType({
    f.name: Param(name=f.name, default=f.default, **f.metadata["param"])
    for f in fields(JobOptions)
})  # fmt: skip
"""The job options' part of the table."""

PARAMETERS: Mapping[str, Param] = MappingProxyType({**TRANSFER_PARAMETERS, **JOB_PARAMETERS})
"""The parameter table: the transfer's rows in field order, then the job options'."""

PUBLIC_PARAMETERS: tuple[str, ...] = tuple(n for n, p in PARAMETERS.items() if p.public)
"""What the API and the form may set; the rest (Adam's betas, layers, precision) are the
engine's."""


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
assert tuple(PRESETS) == PRESET_NAMES


# ---- coercion: form strings / JSON values into each kind ----------------------------------


def _to_int(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError
    if isinstance(value, float):
        if not value.is_integer():
            raise ValueError
        return int(value)
    if isinstance(value, int):
        return value
    return parse_int(str(value).strip())  # ASCII digits only (shared/text.py)


def _to_float(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError
    return parse_decimal(value.strip()) if isinstance(value, str) else float(value)


def _to_bool(value: Any) -> bool:
    return parse_bool(value, "value")  # its ValueError becomes the field's ParamError


def _to_float_list(value: Any) -> tuple[float, ...]:
    items = value.split(",") if isinstance(value, str) else list(value)
    return tuple(_to_float(x) for x in items)


def _to_layers(value: Any) -> LayerWeights:
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


def _to_str(value: Any) -> str:
    return str(value).strip()


def _to_str_list(value: Any) -> tuple[str, ...]:
    items = value.split(",") if isinstance(value, str) else list(value)
    return tuple(str(x).strip() for x in items if str(x).strip())


_COERCE: dict[str, Callable[[Any], Any]] = {
    "int": _to_int,
    "float": _to_float,
    "bool": _to_bool,
    "choice": _to_str,
    "float_list": _to_float_list,
    "layers": _to_layers,
    "url": _to_str,
    "choice_list": _to_str_list,
}
_EXPECTED = {"int": "an integer", "float": "a number", "bool": "true or false"}


def _coerce(key: str, value: Any) -> Any:
    """Turn a form string / JSON value into the field's type, or raise ParamError."""
    kind = PARAMETERS[key].kind
    try:
        return _COERCE[kind](value)
    except (TypeError, ValueError):
        expected = _EXPECTED.get(kind, "a valid value")
        raise ParamError(key, f"must be {expected}, got {value!r}") from None


# ---- checks: one per kind, against the row ------------------------------------------------


def _int_range(name: str, value: Any, low: Any, high: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ParamError(name, f"must be an integer from {low} to {high}")
    if not low <= value <= high:
        raise ParamError(name, f"must be from {low} to {high}, got {value}")


def _float_range(name: str, value: Any, low: Any, high: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ParamError(name, f"must be a number from {low:g} to {high:g}")
    if not math.isfinite(value):
        raise ParamError(name, f"must be a finite number, got {value}")
    if value < low or value > high:
        raise ParamError(name, f"must be from {low:g} to {high:g}, got {value:g}")


def _check_int(param: Param, value: Any, allow_paths: bool) -> None:
    _int_range(param.name, value, param.low, param.high)


def _check_float(param: Param, value: Any, allow_paths: bool) -> None:
    _float_range(param.name, value, param.low, param.high)


def _check_bool(param: Param, value: Any, allow_paths: bool) -> None:
    if not isinstance(value, bool):
        raise ParamError(param.name, "must be true or false")


def _check_choice(param: Param, value: Any, allow_paths: bool) -> None:
    if value in param.choices or (value is None and param.null_label):
        return
    if param.path_suffixes and allow_paths:
        if not str(value).endswith(param.path_suffixes):
            raise ParamError(
                param.name,
                f"must be {', '.join(param.choices)} or a path to a "
                f"{'/'.join(param.path_suffixes)} file",
            )
        return
    if param.path_suffixes:  # a path where paths are not allowed: say the choices only
        raise ParamError(param.name, f"must be one of {', '.join(param.choices)}")
    raise ParamError(param.name, f"must be one of {', '.join(param.choices)}, got {value!r}")


def _check_float_list(param: Param, value: Any, allow_paths: bool) -> None:
    if value is None and param.null_label:
        return
    for item in value:
        _float_range(param.name, item, param.low, param.high)


def _check_layers(param: Param, layers: LayerWeights, allow_paths: bool) -> None:
    name = param.name
    if not layers:
        raise ParamError(name, "give at least one VGG19 layer")
    seen = set()
    for layer, weight in layers:
        if layer not in param.choices:
            raise ParamError(
                name, f"unknown VGG19 layer {layer!r}; choose from {', '.join(param.choices)}"
            )
        if layer in seen:
            raise ParamError(name, f"layer {layer!r} is listed twice")
        seen.add(layer)
        _float_range(name, weight, param.low, param.high)
    if sum(w for _, w in layers) <= 0:
        raise ParamError(name, "at least one layer weight must be above 0")


def _check_url(param: Param, value: Any, allow_paths: bool) -> None:
    """An absolute http(s) URL with a host, no user name or password, no fragment."""
    if value is None and param.null_label:
        return
    name = param.name
    if not isinstance(value, str) or not value:
        raise ParamError(name, "must be a URL")
    if len(value) > (param.high or MAX_URL_CHARS):
        raise ParamError(name, f"must be at most {fmt(param.high)} characters long")
    if any(c.isspace() or not c.isprintable() for c in value):
        raise ParamError(name, "must not contain spaces or control characters")
    try:
        parts = urlsplit(value)
        port = parts.port  # raises for a port that is not a number from 0 to 65535
    except ValueError as exc:
        raise ParamError(name, f"is not a valid URL: {exc}") from None
    if parts.scheme.lower() not in param.choices:
        raise ParamError(name, f"must be an {' or '.join(param.choices)} URL")
    if not parts.hostname:
        raise ParamError(name, "must name a host")
    if parts.username is not None or parts.password is not None:
        raise ParamError(name, "must not contain a user name or password")
    if parts.fragment:
        raise ParamError(name, "must not contain a #fragment")
    if port == 0:
        raise ParamError(name, "must not use port 0")


def _check_choice_list(param: Param, value: Any, allow_paths: bool) -> None:
    name = param.name
    if not isinstance(value, tuple) or not value:
        raise ParamError(name, f"give one or more of {', '.join(param.choices)}")
    for item in value:
        if item not in param.choices:
            raise ParamError(name, f"unknown {item!r}; choose from {', '.join(param.choices)}")
    if len(set(value)) != len(value):
        raise ParamError(name, "an item is listed twice")


_CHECKS: dict[str, Callable[[Param, Any, bool], None]] = {
    "int": _check_int,
    "float": _check_float,
    "bool": _check_bool,
    "choice": _check_choice,
    "float_list": _check_float_list,
    "layers": _check_layers,
    "url": _check_url,
    "choice_list": _check_choice_list,
}


# ---- what the network needs of a picture ----------------------------------------------------


def min_side(layers: tuple[str, ...]) -> int:
    """The shortest side, in pixels, a picture needs for VGG19 to reach the deepest of
    ``layers``: each block before it halves the picture (block 5 needs 16 px). The engine
    refuses a smaller content image; the web refuses such a job at submit."""
    deepest = max(int(name[len("block")]) for name in layers)
    return int(2 ** (deepest - 1))


def job_min_side(params: TransferParams) -> int:
    """:func:`min_side` of the layers a job uses (those with a weight above 0)."""
    layers = params.content_layers + params.style_layers
    return min_side(tuple(name for name, weight in layers if weight > 0))
