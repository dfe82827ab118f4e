"""The tiled pass's TensorFlow pieces: one tile forward (Gram partials and content crops) and
one tile step (its share of the exact gradient). The loop is ``tiling``.

A tile is run with its halo (``shared.memory.halo``), so the features of its core are the
whole image's; only the core's features count (each feature position belongs to exactly one
core, since cores start on multiples of 16). ``box`` is the core in pixels, relative to the
padded tile: ``(y0, y1, x0, x1)``; a layer of block b sees it as ``box // 2**(b - 1)``.

The style loss needs the whole image's Gram matrices, so the tile step takes them (``grams``)
and makes the gradient of the loss through the tile's own Gram partial: with G held fixed,
``sum((G - S) * partial) * 2 / C**2`` has, in the tile's features, exactly the gradient of
``mean((G - S)**2)``. Summed over tiles, the gradients are the whole image's.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import tensorflow as tf

from stylequeue.shared.memory import block
from stylequeue.worker.engine.extractor import Extractor
from stylequeue.worker.engine.losses import HYPER_FIELDS

TileFn = Callable[..., Any]


def _crop(features: Any, layer: str, box: Any) -> Any:
    """The core's positions of ``layer``'s (1, h, w, C) features."""
    cell = 2 ** (block(layer) - 1)
    b = box // cell
    return features[:, b[0] : b[1], b[2] : b[3], :]


def _partial_gram(core: Any, scale: Any) -> Any:
    """The core's share of the whole image's Gram: F^T F / (the whole image's positions)."""
    flat = tf.reshape(core, (-1, core.shape[-1]))
    return tf.matmul(flat, flat, transpose_a=True) * scale


def get_tile_forward(
    extractor: Extractor, content_layers: Sequence[str], style_layers: Sequence[str]
) -> TileFn:
    """``forward(x, box, style_scales)`` -> (content crops, Gram partials): what a forward
    pass over one padded tile adds to the targets or to the Grams of the whole image."""
    key = ("tile-forward", tuple(content_layers), tuple(style_layers))
    with extractor.lock:
        fn = extractor.steps.get(key)
        if fn is None:
            fn = extractor.steps[key] = _build_forward(
                extractor, tuple(content_layers), tuple(style_layers)
            )
    return fn


def _build_forward(
    extractor: Extractor, content_layers: tuple[str, ...], style_layers: tuple[str, ...]
) -> TileFn:
    signature = [
        tf.TensorSpec([1, None, None, 3], tf.float32),
        tf.TensorSpec([4], tf.int32),
        tf.TensorSpec([len(style_layers)], tf.float32),  # 1 / the whole image's positions
    ]

    @tf.function(input_signature=signature)
    def forward(x, box, style_scales):  # type: ignore[no-untyped-def]
        feats = extractor(x)
        crops = [_crop(feats[n], n, box) for n in content_layers]
        partials = [
            _partial_gram(_crop(feats[n], n, box), style_scales[i])
            for i, n in enumerate(style_layers)
        ]
        return crops, partials

    compiled: TileFn = forward
    return compiled


def get_tile_step(
    extractor: Extractor, content_layers: Sequence[str], style_layers: Sequence[str]
) -> TileFn:
    """``step(x, box, content_targets, grams, style_targets, content_scales, style_scales,
    content_lw, style_lw, hyper)`` -> (gradient of the padded tile, the tile's weighted
    content loss, its Gram partials).

    ``content_targets`` are the core's crops of the content image's features; ``grams`` the
    whole image's Grams the style gradient is taken at; ``content_scales`` 1 / (positions x
    channels) and ``style_scales`` 1 / positions, of the whole image, per layer. The content
    losses of all tiles add up to the whole image's; the partials to its Grams.
    """
    key = ("tile-step", tuple(content_layers), tuple(style_layers))
    with extractor.lock:
        fn = extractor.steps.get(key)
        if fn is None:
            fn = extractor.steps[key] = _build_step(
                extractor, tuple(content_layers), tuple(style_layers)
            )
    return fn


def _build_step(
    extractor: Extractor, content_layers: tuple[str, ...], style_layers: tuple[str, ...]
) -> TileFn:
    channels = extractor.channels
    n_content, n_style = len(content_layers), len(style_layers)
    signature = [
        tf.TensorSpec([1, None, None, 3], tf.float32),
        tf.TensorSpec([4], tf.int32),
        [tf.TensorSpec([1, None, None, channels[n]], tf.float32) for n in content_layers],
        [tf.TensorSpec([channels[n], channels[n]], tf.float32) for n in style_layers],
        [tf.TensorSpec([channels[n], channels[n]], tf.float32) for n in style_layers],
        tf.TensorSpec([n_content], tf.float32),
        tf.TensorSpec([n_style], tf.float32),
        tf.TensorSpec([n_content], tf.float32),
        tf.TensorSpec([n_style], tf.float32),
        tf.TensorSpec([len(HYPER_FIELDS)], tf.float32),
    ]

    @tf.function(input_signature=signature)
    def step(x, box, content_targets, grams, style_targets, content_scales, style_scales,  # type: ignore[no-untyped-def]
             content_lw, style_lw, hyper):  # fmt: skip
        with tf.GradientTape() as tape:
            tape.watch(x)
            feats = extractor(x)
            content_terms = [
                tf.reduce_sum(tf.square(_crop(feats[n], n, box) - content_targets[i]))
                * content_scales[i]
                for i, n in enumerate(content_layers)
            ]
            content = hyper[0] * tf.reduce_sum(tf.stack(content_terms) * content_lw) / n_content
            partials = [
                _partial_gram(_crop(feats[n], n, box), style_scales[i])
                for i, n in enumerate(style_layers)
            ]
            # the gradient of the style loss through this tile's partial, G held fixed
            style_terms = [
                tf.reduce_sum((grams[i] - style_targets[i]) * partials[i])
                * (2.0 / float(channels[n] ** 2))
                for i, n in enumerate(style_layers)
            ]
            style = hyper[1] * tf.reduce_sum(tf.stack(style_terms) * style_lw) / n_style
            surrogate = content + style
        grad = tape.gradient(surrogate, x)
        return grad, content, partials

    compiled: TileFn = step
    return compiled
