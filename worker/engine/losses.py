"""Gatys losses and the Adam update, written with ``keras.ops`` only.

Backend-neutral on purpose: the TensorFlow step (:mod:`worker.engine.step_tf`) calls these
inside its compiled function, and a JAX or PyTorch step would call the very same code.
Everything here is float32; the extractor already cast bf16 features up.

The loss balance follows the TensorFlow tutorial (which the ``default`` preset's numbers
come from): per-layer mean squared errors averaged over the layers, Grams normalised by the
number of positions, total variation as a sum of absolute neighbour differences.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from keras import ops

from stylequeue.shared.params import TransferParams

Tensor = Any  # a backend tensor (tf.Tensor, jax.Array, torch.Tensor)

# Order of the scalar hyper-parameters handed to the step as ONE float32 vector, so a new
# job with other weights or another learning rate reuses the compiled step (no retrace).
HYPER_FIELDS = (
    "content_weight",
    "style_weight",
    "tv_weight",
    "learning_rate",
    "beta_1",
    "beta_2",
    "epsilon",
    "one_minus_beta_1",  # 1 - beta computed in float64, exactly as keras.optimizers.Adam does
    "one_minus_beta_2",
)


def hyper_vector(params: TransferParams) -> np.ndarray:
    """The step's float32 hyper-parameter vector (see :data:`HYPER_FIELDS`)."""
    values = [
        params.content_weight,
        params.style_weight,
        params.tv_weight,
        params.learning_rate,
        params.beta_1,
        params.beta_2,
        params.epsilon,
        1.0 - params.beta_1,
        1.0 - params.beta_2,
    ]
    return np.array(values, dtype=np.float32)


def gram_matrix(features: Tensor) -> Tensor:
    """(1, H, W, C) or (H, W, C) features -> (C, C) Gram, divided by the positions H*W.

    Normalising by positions makes the style target independent of the image size, so a
    style image may be larger or smaller than the content (``style_scale``).
    """
    channels = features.shape[-1]
    flat = ops.reshape(features, (-1, channels))
    positions = ops.cast(ops.shape(flat)[0], "float32")
    return ops.matmul(ops.transpose(flat), flat) / positions


def content_loss(
    features: Sequence[Tensor], targets: Sequence[Tensor], layer_weights: Tensor
) -> Tensor:
    """Weighted mean over content layers of MSE(features, content image's features).

    Compares the generated image's features with the CONTENT image's features (the reference
    article's ``content_cost`` compared style Grams instead, so content never held).
    """
    terms = ops.stack([ops.mean(ops.square(f - t)) for f, t in zip(features, targets, strict=True)])
    return ops.sum(terms * layer_weights) / float(len(features))


def style_loss(
    features: Sequence[Tensor], target_grams: Sequence[Tensor], layer_weights: Tensor
) -> Tensor:
    """Weighted mean over style layers of MSE(Gram(features), style Gram target)."""
    terms = ops.stack(
        [
            ops.mean(ops.square(gram_matrix(f) - g))
            for f, g in zip(features, target_grams, strict=True)
        ]
    )
    return ops.sum(terms * layer_weights) / float(len(features))


def total_variation(image: Tensor) -> Tensor:
    """Sum of absolute differences between neighbouring pixels (tf.image.total_variation)."""
    dy = image[:, 1:, :, :] - image[:, :-1, :, :]
    dx = image[:, :, 1:, :] - image[:, :, :-1, :]
    return ops.sum(ops.abs(dy)) + ops.sum(ops.abs(dx))


def loss_terms(
    features: Mapping[str, Tensor],
    image: Tensor,
    content_layers: Sequence[str],
    style_layers: Sequence[str],
    content_targets: Sequence[Tensor],
    style_targets: Sequence[Tensor],
    content_layer_weights: Tensor,
    style_layer_weights: Tensor,
    hyper: Tensor,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(total, weighted content, weighted style, weighted tv): what every iteration reports."""
    content = hyper[0] * content_loss(
        [features[n] for n in content_layers], content_targets, content_layer_weights
    )
    style = hyper[1] * style_loss(
        [features[n] for n in style_layers], style_targets, style_layer_weights
    )
    tv = hyper[2] * total_variation(image)
    return content + style + tv, content, style, tv


def adam_update(
    x: Tensor, grad: Tensor, m: Tensor, v: Tensor, step: Tensor, hyper: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """One Adam step on the pixels, then clip to [0, 1]; returns (x, m, v).

    The same arithmetic as ``keras.optimizers.Adam.update_step`` (a test holds it to that),
    written as a pure function so the compiled step carries its state as tensors: one trace
    serves every job and every image size, and a JAX step can use it unchanged.
    ``step`` is the 1-based iteration as a float32 scalar.
    """
    lr, beta_1, beta_2, epsilon = hyper[3], hyper[4], hyper[5], hyper[6]
    alpha = lr * ops.sqrt(1 - ops.power(beta_2, step)) / (1 - ops.power(beta_1, step))
    m = m + (grad - m) * hyper[7]
    v = v + (ops.square(grad) - v) * hyper[8]
    x = x - (m * alpha) / (ops.sqrt(v) + epsilon)
    return ops.clip(x, 0.0, 1.0), m, v
