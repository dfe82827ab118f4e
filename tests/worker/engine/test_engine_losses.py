"""Losses and the Adam update on known small tensors."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import ops

from stylequeue.shared.params import TransferParams
from stylequeue.worker.engine.losses import (
    adam_update,
    content_loss,
    gram_matrix,
    hyper_vector,
    style_loss,
    total_variation,
)


def _np(x: object) -> np.ndarray:
    return np.asarray(ops.convert_to_numpy(x))


def test_gram_is_symmetric_and_normalised_by_positions() -> None:
    # 1 x 2 x 2 positions x 2 channels; channel a = [1, 2, 3, 4], channel b = [0, 1, 0, 1]
    f = np.array([[[[1, 0], [2, 1]], [[3, 0], [4, 1]]]], dtype=np.float32)
    g = _np(gram_matrix(ops.convert_to_tensor(f)))
    # a.a = 30, a.b = 6, b.b = 2; divided by 4 positions
    assert np.allclose(g, [[7.5, 1.5], [1.5, 0.5]])
    assert np.array_equal(g, g.T)


def test_gram_does_not_depend_on_image_size() -> None:
    rng = np.random.default_rng(0)
    f = rng.random((1, 3, 4, 5)).astype(np.float32)
    tiled = np.tile(f, (1, 2, 3, 1))  # the same statistics over 6x as many positions
    assert np.allclose(_np(gram_matrix(f)), _np(gram_matrix(tiled)), rtol=1e-5)
    assert np.allclose(_np(gram_matrix(2 * f)), 4 * _np(gram_matrix(f)), rtol=1e-5)


def test_content_loss_is_mse_of_features_weighted_and_averaged_over_layers() -> None:
    a = np.zeros((1, 2, 2, 3), np.float32)
    b = np.full((1, 2, 2, 3), 2.0, np.float32)
    c = np.full((1, 1, 1, 4), 1.0, np.float32)
    assert float(_np(content_loss([a], [a], np.array([1.0], np.float32)))) == 0.0
    assert float(_np(content_loss([a], [b], np.array([1.0], np.float32)))) == pytest.approx(4.0)
    # two layers, weights 1 and 3: (1*4 + 3*1) / 2
    loss = content_loss([a, c], [b, 0 * c], np.array([1.0, 3.0], np.float32))
    assert float(_np(loss)) == pytest.approx(3.5)


def test_style_loss_compares_grams() -> None:
    rng = np.random.default_rng(1)
    f = rng.random((1, 4, 4, 3)).astype(np.float32)
    target = _np(gram_matrix(f))
    w = np.array([1.0], np.float32)
    assert float(_np(style_loss([f], [target], w))) == pytest.approx(0.0, abs=1e-12)
    # a spatial shuffle keeps the Gram: style ignores where things are
    shuffled = f.reshape(1, 16, 3)[:, rng.permutation(16)].reshape(1, 4, 4, 3)
    assert float(_np(style_loss([shuffled], [target], w))) == pytest.approx(0.0, abs=1e-10)
    assert float(_np(style_loss([2 * f], [target], w))) > 0


def test_total_variation_matches_tensorflow() -> None:
    rng = np.random.default_rng(2)
    x = rng.random((1, 5, 6, 3)).astype(np.float32)
    assert float(_np(total_variation(x))) == pytest.approx(
        float(tf.reduce_sum(tf.image.total_variation(tf.constant(x)))), rel=1e-6
    )
    assert float(_np(total_variation(np.ones((1, 4, 4, 3), np.float32)))) == 0.0


def test_adam_update_matches_keras_adam() -> None:
    params = TransferParams(learning_rate=0.02, beta_1=0.99, beta_2=0.999, epsilon=0.1)
    rng = np.random.default_rng(3)
    x0 = rng.uniform(0.2, 0.8, (1, 3, 4, 3)).astype(np.float32)
    grads = [rng.normal(0, 5, x0.shape).astype(np.float32) for _ in range(4)]

    var = keras.Variable(x0)
    opt = keras.optimizers.Adam(
        learning_rate=params.learning_rate,
        beta_1=params.beta_1,
        beta_2=params.beta_2,
        epsilon=params.epsilon,
    )
    x, m, v = ops.convert_to_tensor(x0), ops.zeros_like(x0), ops.zeros_like(x0)
    hyper = ops.convert_to_tensor(hyper_vector(params))
    for k, g in enumerate(grads, start=1):
        opt.apply_gradients([(ops.convert_to_tensor(g), var)])
        x, m, v = adam_update(x, g, m, v, ops.convert_to_tensor(np.float32(k)), hyper)
        assert np.allclose(_np(x), np.clip(_np(var.value), 0, 1), rtol=1e-6, atol=1e-7)
    assert not np.allclose(_np(x), x0)  # it moved


def test_adam_update_clips_to_unit_range() -> None:
    params = TransferParams(learning_rate=5.0)
    x = np.full((1, 2, 2, 3), 0.5, np.float32)
    g = np.ones_like(x)
    out, _, _ = adam_update(x, g, 0 * x, 0 * x, np.float32(1), hyper_vector(params))
    assert float(_np(ops.min(out))) == 0.0
    out, _, _ = adam_update(x, -g, 0 * x, 0 * x, np.float32(1), hyper_vector(params))
    assert float(_np(ops.max(out))) == 1.0
