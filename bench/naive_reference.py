"""The naive loop, written the way the reference article does it: the benchmark's baseline.

Eager TensorFlow; one Keras model per style layer plus one for content, each run from the
input again; the style and content images' features recomputed every iteration; the
preprocessing outside the model; ``generated.numpy()`` copied whenever the loss improves.
The losses, weights and Adam settings are the engine's (with the article's content-loss bug
fixed), so only the structure differs and the final losses are comparable.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import keras
import numpy as np
import tensorflow as tf

from stylequeue.shared.params import TransferParams
from stylequeue.worker.engine.extractor import IMAGENET_BGR_MEAN, _random_conv


def build_vgg_random() -> keras.Model:
    """VGG19 without top, with the engine's seeded `random` kernels (same network)."""
    model = keras.applications.VGG19(include_top=False, weights=None)
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    for index, layer in enumerate(convs):
        layer.set_weights(_random_conv(index, layer.kernel.shape))
    model.trainable = False
    return model


def preprocess(x01: tf.Tensor) -> tf.Tensor:
    """[0, 1] RGB -> caffe input, outside the model as the article does."""
    return tf.reverse(x01 * 255.0, axis=[-1]) - tf.constant(IMAGENET_BGR_MEAN, tf.float32)


def gram_matrix(a: tf.Tensor) -> tf.Tensor:
    channels = int(a.shape[-1])
    flat = tf.reshape(a, [-1, channels])
    n = tf.shape(flat)[0]
    return tf.matmul(flat, flat, transpose_a=True) / tf.cast(n, tf.float32)


def run(
    content01: np.ndarray,
    style01: np.ndarray,
    params: TransferParams,
    on_iteration: Callable[[int, float, float], None] | None = None,
) -> tuple[np.ndarray, list[float]]:
    """Optimise like the article; returns (best image [0, 1], per-iteration losses)."""
    vgg = build_vgg_random()
    content_layer = params.content_layers[0][0]
    content_model = keras.Model(vgg.input, vgg.get_layer(content_layer).output)
    style_models = [
        (keras.Model(vgg.input, vgg.get_layer(name).output), weight)
        for name, weight in params.style_layers
    ]

    content = tf.constant(content01[None], tf.float32)
    style = tf.constant(style01[None], tf.float32)

    def content_cost(content: tf.Tensor, generated: tf.Tensor) -> tf.Tensor:
        a_c = content_model(preprocess(content))  # recomputed every iteration
        a_g = content_model(preprocess(generated))
        return tf.reduce_mean(tf.square(a_c - a_g))

    def style_cost(style: tf.Tensor, generated: tf.Tensor) -> tf.Tensor:
        j_style = 0.0
        for style_model, weight in style_models:
            a_s = style_model(preprocess(style))  # recomputed every iteration
            a_g = style_model(preprocess(generated))
            j_style += weight * tf.reduce_mean(tf.square(gram_matrix(a_s) - gram_matrix(a_g)))
        return j_style / len(style_models)

    generated = tf.Variable(content)
    opt = keras.optimizers.Adam(
        learning_rate=params.learning_rate,
        beta_1=params.beta_1,
        beta_2=params.beta_2,
        epsilon=params.epsilon,
    )
    best_cost, best_image = np.inf, content01
    losses: list[float] = []
    start = time.perf_counter()
    for i in range(params.iterations):
        with tf.GradientTape() as tape:
            j_total = (
                params.content_weight * content_cost(content, generated)
                + params.style_weight * style_cost(style, generated)
                + params.tv_weight * tf.reduce_sum(tf.image.total_variation(generated))
            )
        grads = tape.gradient(j_total, generated)
        if float(j_total) < best_cost:
            best_cost = float(j_total)
            best_image = generated.numpy()[0]
        opt.apply_gradients([(grads, generated)])
        generated.assign(tf.clip_by_value(generated, 0.0, 1.0))
        losses.append(float(j_total))
        if on_iteration is not None:
            on_iteration(i + 1, float(j_total), time.perf_counter() - start)
    return best_image, losses
