"""What the server accepts, for clients to mirror (``GET /api/v1/config``).

The pages check a form before sending it with exactly these limits and ranges. The ranges
repeat those in ``shared.params.TransferParams.validate``; a test walks every bound through
``TransferParams.from_inputs`` so the two cannot drift apart unnoticed.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from stylequeue.shared.images import ALLOWED_FORMATS
from stylequeue.shared.params import INITS, MAX_SEED, PRESETS, WEIGHTS_MODES
from stylequeue.shared.settings import Limits


def parameter_specs(limits: Limits) -> dict[str, dict[str, Any]]:
    default = PRESETS["default"]
    specs: dict[str, dict[str, Any]] = {
        "preset": {"type": "choice", "choices": list(PRESETS), "default": "default"},
        "iterations": {"type": "int", "min": 1, "max": limits.max_iterations},
        "max_size": {"type": "int", "min": 16, "max": limits.max_size},
        "content_weight": {"type": "float", "min": 0.0, "max": 1e12},
        "style_weight": {"type": "float", "min": 0.0, "max": 1e12},
        "tv_weight": {"type": "float", "min": 0.0, "max": 1e12},
        "learning_rate": {"type": "float", "min": 1e-6, "max": 100.0},
        "seed": {"type": "int", "min": 0, "max": MAX_SEED},
        "snapshot_every": {
            "type": "int",
            "min": 0,
            "max": limits.max_iterations,
            "note": "0 = no snapshots",
        },
        "preserve_colors": {"type": "bool"},
        "weights": {
            "type": "choice",
            "choices": list(WEIGHTS_MODES),
            "note": "empty = the workers' configured weights",
        },
        "style_scale": {"type": "float", "min": 0.1, "max": 4.0},
        "style_blend": {
            "type": "float_list",
            "min": 0.0,
            "max": 1e6,
            "note": "comma-separated, one weight per style image",
        },
        "init": {"type": "choice", "choices": list(INITS)},
    }
    for name, spec in specs.items():
        if name != "preset":
            spec.setdefault("default", getattr(default, name))
    return specs


def limits_payload(limits: Limits) -> dict[str, int]:
    """The limits clients mirror (the API's /config and the pages' inline config)."""
    return dataclasses.asdict(limits)


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
                "within_limits": p.iterations <= limits.max_iterations
                and p.max_size <= limits.max_size,
            }
            for name, p in PRESETS.items()
        ],
        "parameters": parameter_specs(limits),
    }
