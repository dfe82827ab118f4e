"""What the submission form offers: sample paintings, presets and its fields.

Every field is made from the parameter table (``shared.params.PARAMETERS``): label, hint,
min/max/step and starting value, with this server's limits applied, so the form checks a
value in the browser exactly as a submit is checked. This module only says which parameters
the form shows, where, and which presets it offers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from stylequeue.shared.params import PARAMETERS, PRESETS
from stylequeue.shared.settings import Limits


@dataclass(frozen=True)
class Sample:
    slug: str
    title: str
    artist: str
    year: int


SAMPLES = (
    Sample("starry-night", "The Starry Night", "Vincent van Gogh", 1889),
    Sample("the-scream", "The Scream", "Edvard Munch", 1893),
    Sample("woman-with-hat", "Woman with a Hat", "Henri Matisse", 1905),
    Sample("shipwreck", "The Shipwreck", "J. M. W. Turner", 1805),
)

FORM_PRESETS = (("quick", "Quick"), ("balanced", "Balanced"), ("high", "High quality"))
DEFAULT_PRESET = "quick"

# The parameters the form shows, in order: always visible, then under "Advanced settings".
MAIN_FIELDS = ("iterations", "max_size")
ADVANCED_FIELDS = (
    "style_weight", "content_weight", "tv_weight", "learning_rate", "style_scale",
    "snapshot_every", "seed", "weights", "preserve_colors", "optimizer", "scales",
)  # fmt: skip
# What choosing a preset fills in (a preset leaves the weights to the worker).
PRESET_KEYS = tuple(n for n in MAIN_FIELDS + ADVANCED_FIELDS if PARAMETERS[n].kind != "choice")


def html_number(value: float) -> str:
    """A number for an HTML attribute: reads back as exactly this number, and whole numbers
    are written as JavaScript writes them (``16``, ``0.02``, ``1e-06``, ``1000000000000``)."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e21:
        return str(int(value))
    return repr(value)


def preset_values(name: str, limits: Limits) -> dict[str, Any]:
    """A form preset's values, capped to this server's limits (a small test server, say)."""
    values = {k: getattr(PRESETS[name], k) for k in PRESET_KEYS}
    for key, value in values.items():
        cap = PARAMETERS[key].high_within(limits)
        if PARAMETERS[key].limit is not None and cap is not None:
            values[key] = min(value, cap)
    values["snapshot_every"] = min(values["snapshot_every"], values["iterations"])
    return values


def form_field(name: str, limits: Limits, value: Any) -> dict[str, Any]:
    """One control of the form, from the parameter's table row; ``widget`` says which."""
    param = PARAMETERS[name]
    field: dict[str, Any] = {"name": name, "label": param.label, "hint": param.hint_for(limits)}
    if param.kind == "bool":
        return {**field, "widget": "checkbox", "checked": bool(value)}
    if param.kind == "choice":
        options = list(zip(param.choices, param.choice_labels, strict=True))
        if param.null_label:
            options.insert(0, ("", param.null_label))
        return {**field, "widget": "select", "options": options, "value": value or ""}
    high = param.high_within(limits)
    assert param.kind in ("int", "float") and param.low is not None and high is not None
    return {
        **field,
        "widget": "number",
        "kind": param.kind,
        "min": html_number(param.low),
        "max": html_number(high),
        "step": 1 if param.kind == "int" else "any",
        "value": html_number(value),
    }


def form_fields(
    limits: Limits, values: dict[str, Any]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The main and the advanced fields, starting at ``values`` (a preset's) where given."""

    def make(names: tuple[str, ...]) -> list[dict[str, Any]]:
        return [form_field(n, limits, values.get(n, PARAMETERS[n].default)) for n in names]

    return make(MAIN_FIELDS), make(ADVANCED_FIELDS)
