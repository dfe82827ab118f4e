"""The warm VGG19 feature extractor: one multi-output Keras model, built once per process.

One forward pass yields every style and content layer (the reference article ran one model
per layer, re-running the shared early blocks each time). The model stops at the deepest
layer used, converts [0, 1] RGB to VGG's caffe input itself, and is cached by
(weights, layers, precision), so a worker pays for building it once.

Weights: ``imagenet`` (Keras's own download and cache), a path to a local Keras .h5/.keras
file, or ``random`` (fixed-seed He-normal kernels: deterministic, no download, for tests and
offline demos). Anything that cannot be had raises :class:`WeightsUnavailable` at once.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Hashable, Iterable
from pathlib import Path
from typing import Any

import keras
import numpy as np
from keras import layers as klayers
from keras import ops

from stylequeue.shared.params import PRECISIONS, VGG19_LAYERS, min_side
from stylequeue.worker.engine.errors import WeightsUnavailable

# Keras's own ImageNet "no top" weights for VGG19 (keras/src/applications/vgg19.py).
VGG19_NOTOP_FILE = "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5"
VGG19_NOTOP_URL = (
    "https://storage.googleapis.com/tensorflow/keras-applications/vgg19/" + VGG19_NOTOP_FILE
)
VGG19_NOTOP_MD5 = "253f8cb515780f3b799900260a226db6"

# Caffe preprocessing: BGR order, ImageNet mean per channel (B, G, R), 0-255 scale.
IMAGENET_BGR_MEAN = (103.939, 116.779, 123.68)

# `random` weights never depend on a job's seed: every job in every process sees the same
# network, so cached extractors and style Grams stay valid and results repeat.
RANDOM_WEIGHTS_SEED = 19_2014
# He-normal keeps every layer at the caffe input's scale, while ImageNet VGG19's features
# are several times larger, and the presets' style/content balance assumes that. x4 on the
# first kernel (measured at 128 px) makes the default preset's total loss fall from the
# first iteration on random weights, instead of the content image staying the best.
RANDOM_FIRST_LAYER_GAIN = 4.0


class CaffePreprocess(klayers.Layer):
    """[0, 1] RGB -> VGG's caffe input (x*255, RGB->BGR, minus the ImageNet mean).

    Inside the model so the optimiser works on plain [0, 1] pixels (clipping is trivial, the
    learning rate means the same at every size) and no caller handles BGR. Runs in float32
    even under mixed_bfloat16; the first convolution casts.
    """

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)

    def call(self, x: Any) -> Any:
        mean = ops.convert_to_tensor(np.array(IMAGENET_BGR_MEAN, dtype=np.float32))
        return ops.flip(x * 255.0, axis=-1) - mean


class Extractor:
    """A built feature model plus what it was built from.

    ``extractor(x)`` maps a (1, H, W, 3) float32 [0, 1] batch to {layer: float32 features};
    features are cast to float32 here, so Grams and losses never run in bfloat16.
    """

    def __init__(
        self, model: keras.Model, weights: str, layers: tuple[str, ...], precision: str
    ) -> None:
        self.model = model
        self.weights = weights
        self.layers = layers
        self.precision = precision
        self.channels: dict[str, int] = {
            name: int(out.shape[-1]) for name, out in zip(layers, model.outputs, strict=True)
        }
        self.min_side = min_side(layers)  # shared with the web's check at submit
        # step functions compiled for this model, keyed by backend-specific structure keys
        self.steps: dict[Hashable, Callable[..., Any]] = {}
        self.lock = threading.Lock()

    def __call__(self, x: Any) -> dict[str, Any]:
        outs = self.model(x, training=False)
        if not isinstance(outs, list | tuple):
            outs = [outs]
        return {name: ops.cast(out, "float32") for name, out in zip(self.layers, outs, strict=True)}

    def __repr__(self) -> str:
        return f"Extractor(weights={self.weights!r}, layers={self.layers}, {self.precision})"


# ---- process-level cache ------------------------------------------------------------------

_CACHE: dict[tuple[str, tuple[str, ...], str], Extractor] = {}
_CACHE_LOCK = threading.Lock()
_BUILDS = 0


def build_count() -> int:
    """How many extractors this process has built (tests check the cache with it)."""
    return _BUILDS


def clear_cache() -> None:
    """Forget every built extractor (tests; a worker never needs this)."""
    with _CACHE_LOCK:
        _CACHE.clear()


def canonical_layers(names: Iterable[str]) -> tuple[str, ...]:
    """Unique layer names in VGG19 order: the cache key and the model's output order."""
    wanted = set(names)
    unknown = wanted - set(VGG19_LAYERS)
    if unknown:
        raise ValueError(f"unknown VGG19 layers: {', '.join(sorted(unknown))}")
    if not wanted:
        raise ValueError("give at least one VGG19 layer")
    return tuple(n for n in VGG19_LAYERS if n in wanted)


def weights_key(weights: str) -> str:
    """``imagenet`` / ``random`` as they are; a path made absolute (the same file, one key)."""
    if weights in ("imagenet", "random"):
        return weights
    return str(Path(weights).expanduser().resolve())


def get_extractor(weights: str, layers: tuple[str, ...], precision: str) -> Extractor:
    """The process's extractor for (weights, layers, precision), built on first use."""
    global _BUILDS
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    key = (weights_key(weights), canonical_layers(layers), precision)
    with _CACHE_LOCK:  # held while building: two threads never build the same model twice
        ext = _CACHE.get(key)
        if ext is None:
            model = _build_model(weights, key[1], precision)
            ext = _CACHE[key] = Extractor(model, weights, key[1], precision)
            _BUILDS += 1
        return ext


# ---- building -----------------------------------------------------------------------------


def _build_model(weights: str, layers: tuple[str, ...], precision: str) -> keras.Model:
    """Re-create VGG19's layers up to the deepest one wanted, in ``precision``, with weights.

    Each layer is re-made from its own config with a per-layer dtype policy instead of
    flipping Keras's global policy, so building a bf16 model never races other threads.
    """
    source = _weight_source(weights)
    arch = keras.applications.VGG19(include_top=False, weights=None) if source is None else None
    template = arch if arch is not None else _vgg_like(source, weights)

    inputs = keras.Input(shape=(None, None, 3), dtype="float32", name="image_rgb01")
    x = CaffePreprocess(name="caffe_preprocess")(inputs)
    found: dict[str, Any] = {}
    conv_index = 0
    for layer in template.layers:
        if isinstance(layer, klayers.InputLayer):
            continue
        config = layer.get_config()
        config["dtype"] = precision
        clone = layer.__class__.from_config(config)
        x = clone(x)
        if isinstance(layer, klayers.Conv2D):
            if source is None:
                clone.set_weights(_random_conv(conv_index, layer.kernel.shape))
            else:
                clone.set_weights(_source_weights(source, layer.name, weights, layer.kernel.shape))
            conv_index += 1
        if layer.name in layers:
            found[layer.name] = x
            if len(found) == len(layers):
                break
    missing = [n for n in layers if n not in found]
    if missing:
        raise WeightsUnavailable(weights, f"model has no layer(s) {', '.join(missing)}")
    model = keras.Model(inputs, [found[n] for n in layers], name=f"vgg19_{len(layers)}out")
    model.trainable = False
    return model


def _vgg_like(source: keras.Model, weights: str) -> keras.Model:
    """The model whose layer configs we clone: the loaded one if it is VGG19-shaped."""
    names = {layer.name for layer in source.layers}
    if set(VGG19_LAYERS) <= names:
        return source
    return keras.applications.VGG19(include_top=False, weights=None)


def _random_conv(index: int, kernel_shape: tuple[int, ...]) -> list[np.ndarray]:
    """He-normal kernel from a fixed per-layer seed, zero bias: ReLU activations keep their
    scale through 16 layers, so losses and gradients stay in a sane range without ImageNet.
    """
    rng = np.random.default_rng([RANDOM_WEIGHTS_SEED, index])
    fan_in = int(np.prod(kernel_shape[:-1]))
    scale = np.sqrt(2 / fan_in) * (RANDOM_FIRST_LAYER_GAIN if index == 0 else 1.0)
    kernel = rng.standard_normal(kernel_shape, dtype=np.float32) * np.float32(scale)
    return [kernel, np.zeros(kernel_shape[-1], dtype=np.float32)]


def _source_weights(
    source: keras.Model, name: str, weights: str, kernel_shape: tuple[int, ...]
) -> list[np.ndarray]:
    try:
        values: list[np.ndarray] = source.get_layer(name).get_weights()  # Keras is untyped
    except ValueError:
        raise WeightsUnavailable(weights, f"the model has no layer {name!r}") from None
    if len(values) != 2 or tuple(values[0].shape) != tuple(kernel_shape):
        raise WeightsUnavailable(
            weights,
            f"layer {name!r} has weights of shape "
            f"{[tuple(v.shape) for v in values]}, expected kernel {tuple(kernel_shape)} and bias",
        )
    return values


def _weight_source(weights: str) -> keras.Model | None:
    """A model holding the weights to copy, or None for ``random``."""
    if weights == "random":
        return None
    if weights == "imagenet":
        return _load_file(_imagenet_file(), "imagenet")
    return _load_file(Path(weights).expanduser(), weights)


def _imagenet_file() -> Path:
    """Keras's cached ImageNet file, downloading it if needed; WeightsUnavailable if neither.

    KERAS_HOME is read now (Keras reads it once at import) so a process can point it at a
    prepared cache.
    """
    cache_dir = os.environ.get("KERAS_HOME") or None
    try:
        path = keras.utils.get_file(
            VGG19_NOTOP_FILE,
            VGG19_NOTOP_URL,
            cache_subdir="models",
            file_hash=VGG19_NOTOP_MD5,
            cache_dir=cache_dir,
        )
    except Exception as exc:  # URLError, HTTPError, hash mismatch, read-only cache...
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise WeightsUnavailable(
            "imagenet", f"not in the Keras cache and the download failed ({reason})"
        ) from exc
    return Path(path)


_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
_ZIP_MAGIC = b"PK\x03\x04"  # .keras archives are zip files


def _load_file(path: Path, label: str) -> keras.Model:
    """Load VGG19 weights from a local file: a weights-only .h5 (Keras's own ImageNet file,
    with or without the top), or a whole saved model (.keras / .h5)."""
    if not path.is_file():
        raise WeightsUnavailable(label, f"no such file {str(path)!r}")
    with path.open("rb") as fh:
        magic = fh.read(8)
    if magic != _HDF5_MAGIC and not magic.startswith(_ZIP_MAGIC):
        raise WeightsUnavailable(label, f"cannot read {str(path)!r}: not an HDF5 or .keras file")
    errors: list[str] = []
    loaders: list[Callable[[], keras.Model]] = []
    if path.suffix != ".keras":
        loaders += [
            lambda: keras.applications.VGG19(include_top=False, weights=str(path)),
            lambda: keras.applications.VGG19(include_top=True, weights=str(path)),
        ]
    loaders.append(lambda: keras.saving.load_model(str(path), compile=False))
    for load in loaders:
        try:
            return load()
        except Exception as exc:
            errors.append(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
    raise WeightsUnavailable(label, f"cannot read {str(path)!r} as VGG19 weights ({errors[-1]})")
