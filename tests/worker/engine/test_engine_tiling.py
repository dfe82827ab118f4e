"""Tiled optimisation: every core feature is the whole image's, the tiled run is the untiled
one (within float rounding), progress comes per tile and a stop takes effect within one."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import pytest
from engine_samples import FAST, smooth_image, stripes
from keras import ops

from stylequeue.shared.memory import BudgetError, estimate_memory
from stylequeue.worker.engine import EngineState, extractor, step_tf, tiling, transfer
from stylequeue.worker.engine.hardware import device_kind
from stylequeue.worker.engine.tiling import TileReport, transfer_tiled

# Shallow layers (halo 16 px), so a 96 px picture makes real 32 px tiles: 3 x 3 of them.
SHALLOW = replace(
    FAST,
    iterations=5,
    max_size=96,
    content_layers=(("block2_conv2", 1.0),),
    style_layers=(("block1_conv1", 1.0), ("block2_conv1", 1.0)),
)
TILE = 32


@pytest.fixture
def picture() -> np.ndarray:
    return smooth_image(80, 96)


@pytest.fixture
def painting() -> np.ndarray:
    return stripes(60, 60)


def _losses(result: Any) -> list[float]:
    return [h["loss"] for h in result.history]


def test_the_features_of_a_tiles_core_are_the_whole_images() -> None:
    """Default depth (block5_conv2, halo 96 px): 2 x 2 tiles of 112 px on a 224 px image,
    each run with its halo, give the whole image's features and Grams."""
    params = replace(
        FAST,
        max_size=224,
        content_layers=(("block5_conv2", 1.0), ("block3_conv1", 1.0)),
    )
    image = smooth_image(224, 224)
    job = tiling._prepare(image, [image], params, "random", 112, None, tiling._Stop(None), 0.0)
    assert job is not None and job.tiles.count == 4 and job.tiles.halo == 96
    whole = step_tf.get_features(job.extractor)(ops.convert_to_tensor(job.content[None]))
    for name, target in zip(job.content_layers, job.content_targets, strict=True):
        want = np.asarray(whole[name])[0]
        assert target.shape == want.shape
        # float rounding only (the convolutions run on other shapes)
        assert np.abs(target - want).max() <= 1e-5 * np.abs(want).max(), name
    assert job.content_grams is not None
    from stylequeue.worker.engine.losses import gram_matrix

    for name, gram in zip(job.style_layers, job.content_grams, strict=True):
        want = np.asarray(gram_matrix(whole[name]))
        np.testing.assert_allclose(gram, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


def test_tiled_equals_untiled_with_grams_from_a_first_pass(
    picture: np.ndarray, painting: np.ndarray
) -> None:
    whole = transfer(picture, [painting], SHALLOW, weights="random")
    tiles: list[TileReport] = []
    tiled = transfer_tiled(
        picture, [painting], SHALLOW, weights="random", tile=TILE, grams="first-pass",
        on_tile=tiles.append,
    )  # fmt: skip
    assert _losses(tiled) == pytest.approx(_losses(whole), rel=1e-5)
    for key in ("content", "style", "tv"):
        got, want = [h[key] for h in tiled.history], [h[key] for h in whole.history]
        assert got == pytest.approx(want, rel=1e-4), key
    assert np.abs(tiled.image.astype(int) - whole.image.astype(int)).max() <= 1
    assert tiled.best_iteration == whole.best_iteration
    # 9 tiles: the targets (content and style), then a Gram pass and a gradient pass each
    steps = [t for t in tiles if t.phase == "step"]
    assert [t.done for t in steps[:9]] == list(range(10, 19))
    assert {t.total for t in steps} == {18}
    assert len([t for t in tiles if t.phase == "grams"]) == 9 * SHALLOW.iterations


def test_tiled_with_the_previous_iterations_grams_stays_within_a_percent(
    picture: np.ndarray, painting: np.ndarray
) -> None:
    whole = transfer(picture, [painting], SHALLOW, weights="random")
    tiles: list[TileReport] = []
    tiled = transfer_tiled(
        picture, [painting], SHALLOW, weights="random", tile=TILE, on_tile=tiles.append,
        grams="previous",
    )  # fmt: skip
    # iteration 1 starts from the content, whose Grams the targets pass made: exact
    assert _losses(tiled)[0] == pytest.approx(_losses(whole)[0], rel=1e-5)
    assert _losses(tiled)[-1] == pytest.approx(_losses(whole)[-1], rel=0.01)
    assert not [t for t in tiles if t.phase == "grams"]  # one pass an iteration
    assert {t.total for t in tiles if t.phase == "step"} == {9}


def test_a_stop_takes_effect_within_one_tile(picture: np.ndarray, painting: np.ndarray) -> None:
    tiles: list[TileReport] = []
    reports: list[Any] = []

    def stop() -> bool:  # asked after every tile: yes once iteration 2 has done 3 tiles
        return any(t.iteration == 2 and t.done == 3 for t in tiles)

    result = transfer_tiled(
        picture, [painting], SHALLOW, weights="random", tile=TILE, on_tile=tiles.append,
        on_iteration=reports.append, should_stop=stop,
    )  # fmt: skip
    assert result.stopped
    assert (tiles[-1].iteration, tiles[-1].done) == (2, 3)  # no tile after the stop
    assert [r.iteration for r in reports] == [1]  # iteration 2 was dropped
    assert result.iterations_done == 1 and result.best_iteration == 1


def test_a_stop_while_preparing_returns_the_content(
    picture: np.ndarray, painting: np.ndarray
) -> None:
    tiles: list[TileReport] = []
    result = transfer_tiled(
        picture, [painting], SHALLOW, weights="random", tile=TILE, on_tile=tiles.append,
        should_stop=lambda: len(tiles) >= 2,
    )  # fmt: skip
    assert result.stopped and result.iterations_done == 0 and result.history == []
    assert len(tiles) == 2 and tiles[-1].phase == "targets"
    assert result.image.shape == picture.shape and result.best_loss == float("inf")


def test_transfer_runs_in_tiles_when_told(picture: np.ndarray, painting: np.ndarray) -> None:
    tiles: list[TileReport] = []
    result = transfer(
        picture, [painting], replace(SHALLOW, iterations=2), weights="random", tile=TILE,
        on_tile=tiles.append,
    )  # fmt: skip
    # the default takes the Grams in a first pass: two passes over the 9 tiles an iteration
    assert result.iterations_done == 2 and tiles and tiles[-1].total == 18
    assert {t.phase for t in tiles if t.iteration == 2} == {"grams", "step"}


def test_a_job_over_the_budget_is_refused_before_any_work(
    picture: np.ndarray, painting: np.ndarray
) -> None:
    params = replace(SHALLOW, max_size=64, precision="float32")
    builds = extractor.build_count()
    budget = 200 * 10**6  # below the process itself
    with pytest.raises(BudgetError) as info:
        transfer(picture, [painting], params, weights="random", memory_budget=budget)
    assert info.value.budget == budget and info.value.estimate > budget
    assert "200 MB" in str(info.value)
    assert extractor.build_count() == builds  # not even VGG19 was built
    # with room for it, the same job runs untiled
    room = estimate_memory((53, 64), params, device=device_kind())
    result = transfer(picture, [painting], params, weights="random", memory_budget=room)
    assert result.iterations_done == params.iterations


def test_a_tiled_run_resumes_from_its_checkpoint(picture: np.ndarray, painting: np.ndarray) -> None:
    params = replace(SHALLOW, iterations=4)
    kwargs: dict[str, Any] = {"weights": "random", "tile": TILE, "grams": "first-pass"}
    whole = transfer_tiled(picture, [painting], params, **kwargs)
    saved: list[EngineState] = []
    first = transfer_tiled(
        picture, [painting], params, checkpoint_due=lambda k: k == 2,
        on_checkpoint=saved.append, should_stop=lambda: bool(saved), **kwargs,
    )  # fmt: skip
    assert first.stopped and [s.iteration for s in saved] == [2]
    state = EngineState.from_bytes(saved[0].to_bytes())
    resumed = transfer_tiled(picture, [painting], params, resume=state, **kwargs)
    assert [h["iteration"] for h in resumed.history] == [3, 4]
    assert _losses(resumed) == _losses(whole)[2:]
    assert resumed.image.tobytes() == whole.image.tobytes()


def test_a_stop_within_an_iteration_offers_the_last_whole_iteration_as_a_checkpoint(
    picture: np.ndarray, painting: np.ndarray
) -> None:
    tiles: list[TileReport] = []
    saved: list[EngineState] = []
    transfer_tiled(
        picture, [painting], SHALLOW, weights="random", tile=TILE, on_tile=tiles.append,
        should_stop=lambda: any(t.iteration == 3 and t.done == 1 for t in tiles),
        checkpoint_due=lambda k: k == 2 and bool(tiles) and tiles[-1].iteration == 3,
        on_checkpoint=saved.append,
    )  # fmt: skip
    assert [s.iteration for s in saved] == [2]


def test_host_total_variation_and_its_gradient_match_keras() -> None:
    import tensorflow as tf

    from stylequeue.worker.engine.losses import total_variation

    rng = np.random.default_rng(3)
    x = rng.random((300, 41, 3), dtype=np.float32)  # more rows than a band
    grad = np.zeros_like(x)
    got = tiling.total_variation(x, 2.5, grad)
    tx = tf.convert_to_tensor(x[None])
    with tf.GradientTape() as tape:
        tape.watch(tx)
        want = 2.5 * total_variation(tx)
    assert got == pytest.approx(float(want), rel=1e-5)
    np.testing.assert_allclose(grad, np.asarray(tape.gradient(want, tx))[0], atol=1e-5)
