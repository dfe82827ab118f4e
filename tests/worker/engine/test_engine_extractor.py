"""The warm VGG19 extractor: one model, cached, weights from where they were asked for."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest
from keras import layers as klayers
from keras import ops

from stylequeue.worker.engine import WeightsUnavailable, get_extractor
from stylequeue.worker.engine import extractor as ex

SMALL = ("block1_conv1", "block2_conv1")  # cheap to build


def _convs(model: keras.Model) -> list[str]:
    return [layer.name for layer in model.layers if isinstance(layer, klayers.Conv2D)]


def test_one_model_with_every_layer_in_one_pass_stopping_at_the_deepest() -> None:
    e = get_extractor("random", ("block2_conv1", "block1_conv1", "block1_conv1"), "float32")
    assert e.layers == SMALL  # VGG order, duplicates gone
    assert _convs(e.model) == ["block1_conv1", "block1_conv2", "block2_conv1"]
    feats = e(np.zeros((1, 20, 24, 3), np.float32))
    assert set(feats) == set(SMALL)
    assert tuple(feats["block1_conv1"].shape) == (1, 20, 24, 64)
    assert tuple(feats["block2_conv1"].shape) == (1, 10, 12, 128)
    assert e.min_side == 2


def test_cached_per_weights_layers_and_precision() -> None:
    a = get_extractor("random", SMALL, "float32")
    builds = ex.build_count()
    assert get_extractor("random", tuple(reversed(SMALL)), "float32") is a
    assert ex.build_count() == builds
    b = get_extractor("random", SMALL, "mixed_bfloat16")
    assert b is not a and ex.build_count() == builds + 1


def test_caffe_preprocessing_happens_inside_the_model() -> None:
    e = get_extractor("random", SMALL, "float32")
    pre = e.model.get_layer("caffe_preprocess")
    rgb = np.zeros((1, 1, 1, 3), np.float32)
    rgb[..., 0] = 1.0  # pure red
    out = np.asarray(ops.convert_to_numpy(pre(rgb)))[0, 0, 0]
    assert np.allclose(out, [-103.939, -116.779, 255.0 - 123.68], atol=1e-3)  # BGR


def test_random_weights_are_seeded_and_the_same_in_every_build() -> None:
    e = get_extractor("random", SMALL, "float32")
    kernel = np.asarray(e.model.get_layer("block1_conv1").kernel)
    fresh = ex._build_model("random", SMALL, "float32")
    assert np.array_equal(np.asarray(fresh.get_layer("block1_conv1").kernel), kernel)
    assert np.all(np.asarray(e.model.get_layer("block1_conv1").bias) == 0)
    # He-normal (x the first-layer gain): std sqrt(2 / fan_in)
    assert kernel.std() == pytest.approx(ex.RANDOM_FIRST_LAYER_GAIN * np.sqrt(2 / 27), rel=0.1)


def test_bfloat16_computes_in_bf16_and_hands_back_float32() -> None:
    e = get_extractor("random", SMALL, "mixed_bfloat16")
    conv = e.model.get_layer("block1_conv1")
    assert conv.compute_dtype == "bfloat16" and conv.variable_dtype == "float32"
    x = np.random.default_rng(0).random((1, 8, 8, 3)).astype(np.float32)
    feats = e(x)
    assert all(keras.backend.standardize_dtype(f.dtype) == "float32" for f in feats.values())
    f32 = get_extractor("random", SMALL, "float32")(x)
    a = np.asarray(ops.convert_to_numpy(feats["block2_conv1"]))
    b = np.asarray(ops.convert_to_numpy(f32["block2_conv1"]))
    assert np.abs(a - b).mean() < 0.05 * np.abs(b).mean()  # close, not equal
    assert not np.array_equal(a, b)


def test_missing_weights_file_fails_at_once(tmp_path: Path) -> None:
    missing = tmp_path / "nope.h5"
    with pytest.raises(WeightsUnavailable) as info:
        get_extractor(str(missing), SMALL, "float32")
    message = str(info.value)
    assert "STYLEQUEUE_VGG19_WEIGHTS" in message and "random" in message
    assert str(missing) in message and "\n" not in message


def test_unreadable_weights_file_fails(tmp_path: Path) -> None:
    bad = tmp_path / "broken.h5"
    bad.write_bytes(b"not an hdf5 file")
    with pytest.raises(WeightsUnavailable, match="cannot read"):
        get_extractor(str(bad), SMALL, "float32")


def test_imagenet_offline_fails_fast_and_names_the_way_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No cached file (empty KERAS_HOME) and no network: WeightsUnavailable, no fallback."""
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    calls: list[dict] = []

    def offline(*args: object, **kwargs: object) -> str:
        calls.append(dict(kwargs))
        raise Exception("URL fetch failure on https://storage.googleapis.com/...: [Errno -2]")

    monkeypatch.setattr(keras.utils, "get_file", offline)
    builds = ex.build_count()
    with pytest.raises(WeightsUnavailable) as info:
        get_extractor("imagenet", SMALL, "float32")
    assert calls and calls[0]["cache_dir"] == str(tmp_path)  # KERAS_HOME read at call time
    assert calls[0]["cache_subdir"] == "models"
    message = str(info.value)
    assert "STYLEQUEUE_VGG19_WEIGHTS" in message and "random" in message
    assert "imagenet" in message
    assert ex.build_count() == builds  # nothing built, nothing cached


def test_imagenet_really_offline_without_mocks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Keras's real get_file against an empty cache, with the download really failing: the
    HTTPS proxy is a closed local port (urllib honours it), so this holds on any machine,
    with or without internet."""
    from tests.services import free_port

    dead = f"http://127.0.0.1:{free_port()}"
    for var in ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY"):
        monkeypatch.setenv(var, dead)
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    with pytest.raises(WeightsUnavailable, match="download failed"):
        get_extractor("imagenet", SMALL, "float32")


@pytest.mark.parametrize("fmt", ["legacy.h5", "weights.h5", "keras"])
def test_local_weights_file_is_loaded(tmp_path: Path, fmt: str) -> None:
    """A local file: Keras's own (legacy) .h5 format, a Keras 3 weights file, or a saved
    model; its kernels are the ones the extractor uses."""
    marker_shape = (3, 3, 3, 64)
    marker = np.full(marker_shape, 0.01, np.float32)
    if fmt == "keras":  # a whole saved model holding the layer by name is enough
        src = keras.Sequential(
            [
                keras.Input((None, None, 3)),
                klayers.Conv2D(64, 3, padding="same", activation="relu", name="block1_conv1"),
            ]
        )
        path = tmp_path / "tiny.keras"
    else:
        src = keras.applications.VGG19(include_top=False, weights=None)
        path = tmp_path / ("vgg19.weights.h5" if fmt == "weights.h5" else "vgg19_notop.h5")
    src.get_layer("block1_conv1").kernel.assign(marker)
    if fmt == "keras":
        src.save(path)
    elif fmt == "weights.h5":
        src.save_weights(path)
    else:  # the format of vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5
        import h5py
        from keras.src.legacy.saving import legacy_h5_format

        with h5py.File(path, "w") as f:
            legacy_h5_format.save_weights_to_hdf5_group(f, src)
    e = get_extractor(str(path), ("block1_conv1",), "float32")
    assert np.array_equal(np.asarray(e.model.get_layer("block1_conv1").kernel), marker)
    assert e.weights == str(path)


def test_unknown_layer_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown VGG19 layers"):
        get_extractor("random", ("block9_conv1",), "float32")
    with pytest.raises(ValueError, match="precision"):
        get_extractor("random", SMALL, "float16")
