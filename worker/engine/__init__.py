"""The style-transfer engine: arrays in, stylised image and loss history out.

Names are imported lazily (PEP 562), so ``from stylequeue.worker.engine import load_image`` or
``WeightsUnavailable`` never imports TensorFlow; ``transfer`` and friends load it on first use.

Modules: ``imageio`` (Pillow/NumPy I/O and colour), ``errors``, ``extractor`` (the warm VGG19
model), ``losses`` (keras.ops), ``step_tf`` (the only TensorFlow-specific code), ``core``
(the loop).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "transfer": "stylequeue.worker.engine.core",
    "evaluate": "stylequeue.worker.engine.core",
    "warm_up": "stylequeue.worker.engine.core",
    "TransferResult": "stylequeue.worker.engine.core",
    "IterationReport": "stylequeue.worker.engine.core",
    "EngineState": "stylequeue.worker.engine.state",
    "StateError": "stylequeue.worker.engine.state",
    "get_extractor": "stylequeue.worker.engine.extractor",
    "Extractor": "stylequeue.worker.engine.extractor",
    "WeightsUnavailable": "stylequeue.worker.engine.errors",
    "load_image": "stylequeue.worker.engine.imageio",
    "decode_image": "stylequeue.worker.engine.imageio",
    "resize_max": "stylequeue.worker.engine.imageio",
    "encode_png": "stylequeue.worker.engine.imageio",
}

__all__ = [
    "EngineState",
    "Extractor",
    "IterationReport",
    "StateError",
    "TransferResult",
    "WeightsUnavailable",
    "decode_image",
    "encode_png",
    "evaluate",
    "get_extractor",
    "load_image",
    "resize_max",
    "transfer",
    "warm_up",
]

if TYPE_CHECKING:
    from stylequeue.worker.engine.core import (
        IterationReport,
        TransferResult,
        evaluate,
        transfer,
        warm_up,
    )
    from stylequeue.worker.engine.errors import WeightsUnavailable
    from stylequeue.worker.engine.extractor import Extractor, get_extractor
    from stylequeue.worker.engine.imageio import decode_image, encode_png, load_image, resize_max
    from stylequeue.worker.engine.state import EngineState, StateError


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'stylequeue.worker.engine' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
