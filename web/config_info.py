"""What the server accepts, for clients to mirror (``GET /api/v1/config``).

Made from the parameter table (``shared.params.PARAMETERS``), the one place the ranges live,
and this server's Limits: an advertised ``max`` is the intrinsic bound or the server's cap,
whichever is lower, exactly as a submit is checked.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from stylequeue.shared.images import ALLOWED_FORMATS
from stylequeue.shared.params import (
    PARAMETERS,
    PRESETS,
    PUBLIC_PARAMETERS,
    Param,
    ParamError,
    TransferParams,
)
from stylequeue.shared.settings import Limits

_RANGED = ("int", "float", "float_list")


def parameter_spec(param: Param, limits: Limits) -> dict[str, Any]:
    """One parameter as the API describes it: type, choices or min/max, note, default."""
    spec: dict[str, Any] = {"type": param.kind}
    if param.kind in ("choice", "choice_list"):
        spec["choices"] = list(param.choices)
    if param.kind == "url":
        spec["max_length"] = param.high
    if param.kind in _RANGED:
        spec["min"] = param.low
        spec["max"] = param.high_within(limits)
    if param.note:
        spec["note"] = param.note
    spec["default"] = list(param.default) if isinstance(param.default, tuple) else param.default
    return spec


def parameter_specs(limits: Limits) -> dict[str, dict[str, Any]]:
    """Every parameter a submit may set (the API's and the form's), in the table's order."""
    return {name: parameter_spec(PARAMETERS[name], limits) for name in PUBLIC_PARAMETERS}


def limits_payload(limits: Limits) -> dict[str, int]:
    """The limits clients mirror (the API's /config and the pages' inline config)."""
    return dataclasses.asdict(limits)


def _within_limits(preset: TransferParams, limits: Limits) -> bool:
    """Would this server take the preset as it is? The submit's own check decides."""
    try:
        preset.check_limits(limits)
    except ParamError:
        return False
    return True


def config_payload(limits: Limits) -> dict[str, Any]:
    return {
        "limits": limits_payload(limits),
        "formats": list(ALLOWED_FORMATS.values()),
        "format_names": list(ALLOWED_FORMATS),
        "presets": [
            {
                "name": name,
                "iterations": p.iterations,
                "max_size": p.max_size,
                "snapshot_every": p.snapshot_every,
                "within_limits": _within_limits(p, limits),
            }
            for name, p in PRESETS.items()
        ],
        "parameters": parameter_specs(limits),
    }
