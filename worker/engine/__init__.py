"""The style-transfer engine: arrays in, stylised image and loss history out.

Names are imported lazily (PEP 562), so ``from worker.engine import load_image`` or
``WeightsUnavailable`` never imports TensorFlow; ``transfer`` and friends load it on first use.

Modules: ``imageio`` (Pillow/NumPy I/O and colour), ``errors``, ``extractor`` (the warm VGG19
model), ``losses`` (keras.ops), ``step_tf`` (the only TensorFlow-specific code), ``core``
(the loop).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "transfer": "worker.engine.core",
    "evaluate": "worker.engine.core",
    "warm_up": "worker.engine.core",
    "TransferResult": "worker.engine.core",
    "IterationReport": "worker.engine.core",
    "get_extractor": "worker.engine.extractor",
    "Extractor": "worker.engine.extractor",
    "WeightsUnavailable": "worker.engine.errors",
    "load_image": "worker.engine.imageio",
    "decode_image": "worker.engine.imageio",
    "resize_max": "worker.engine.imageio",
    "encode_png": "worker.engine.imageio",
}

__all__ = [
    "Extractor",
    "IterationReport",
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
    from worker.engine.core import IterationReport, TransferResult, evaluate, transfer, warm_up
    from worker.engine.errors import WeightsUnavailable
    from worker.engine.extractor import Extractor, get_extractor
    from worker.engine.imageio import decode_image, encode_png, load_image, resize_max


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'worker.engine' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
