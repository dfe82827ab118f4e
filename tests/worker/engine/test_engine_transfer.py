"""transfer(): the loop, its reports, cancel, determinism and the user-facing features."""

from __future__ import annotations

import itertools
from dataclasses import replace

import numpy as np
import pytest
from engine_samples import FAST, OVERSHOOT, dots, smooth_image, stripes

from stylequeue.shared.params import ParamError, TransferParams
from stylequeue.shared.settings import Limits
from stylequeue.worker.engine import (
    IterationReport,
    evaluate,
    get_extractor,
    step_tf,
    transfer,
    warm_up,
)
from stylequeue.worker.engine import core as engine_core
from stylequeue.worker.engine import extractor as ex
from stylequeue.worker.engine.imageio import rgb_to_ycbcr, to_float01


def image_measured_at(
    iteration: int, reports: list[IterationReport], initial: np.ndarray
) -> np.ndarray:
    """The image iteration ``iteration`` measured its loss on: the one the previous
    iteration's update produced (its snapshot), or the initial image for iteration 1."""
    if iteration == 1:
        return initial
    snapshot = reports[iteration - 2].snapshot
    assert snapshot is not None, "run with snapshot_every=1"
    return snapshot


def test_loss_falls_and_the_best_image_is_tracked(content, style, fast) -> None:
    reports: list[IterationReport] = []
    result = transfer(
        content,
        [style],
        replace(fast, snapshot_every=1),
        weights="random",
        on_iteration=reports.append,
    )
    losses = [r.loss for r in reports]
    assert len(losses) == fast.iterations == result.iterations_done
    assert losses[-1] < 0.9 * losses[0]
    assert result.best_loss == min(losses)
    assert result.best_iteration == 1 + int(np.argmin(losses))
    assert [r.is_best for r in reports].count(True) >= 2
    # the result is the image the best loss was measured on, not the one its update made
    best = result.best_iteration
    is_measured = np.array_equal(result.image, image_measured_at(best, reports, content))
    assert is_measured, f"the result is not the image iteration {best} measured its loss on"
    is_updated = np.array_equal(result.image, reports[best - 1].snapshot)
    assert not is_updated, f"the result is the image iteration {best}'s update made"
    for r in reports:  # the parts add up to the total
        assert r.loss == pytest.approx(r.content + r.style + r.tv, rel=1e-5)
    assert result.history == [
        {k: getattr(r, k) for k in ("iteration", "loss", "content", "style", "tv", "elapsed")}
        for r in reports
    ]
    assert all(b.elapsed >= a.elapsed for a, b in itertools.pairwise(reports))
    assert not result.stopped and result.weights == "random"
    assert result.params.weights == "random"
    assert result.image.dtype == np.uint8 and result.image.shape == content.shape
    assert not np.array_equal(result.image, content)  # it painted something


def test_the_result_is_the_best_iterations_image_not_the_latest(content, style, fast) -> None:
    """A run whose loss falls, then rises again (content only, from noise, a large step
    and heavy momentum overshoot the target): its best iteration is in the middle, and the
    result is the image measured there, neither the image its update made nor the last."""
    params = replace(OVERSHOOT, snapshot_every=1)
    reports: list[IterationReport] = []
    result = transfer(content, [style], params, weights="random", on_iteration=reports.append)
    losses = [r.loss for r in reports]
    best = result.best_iteration
    assert best == 1 + int(np.argmin(losses)) and result.best_loss == min(losses)
    assert 1 < best < params.iterations, losses  # the construction: a minimum mid-run
    assert losses[-1] > result.best_loss
    measured = image_measured_at(best, reports, content)
    after_update = reports[best - 1].snapshot
    final = reports[-1].snapshot
    assert after_update is not None and final is not None
    assert not np.array_equal(measured, after_update) and not np.array_equal(measured, final)
    is_measured = np.array_equal(result.image, measured)
    is_updated = np.array_equal(result.image, after_update)
    is_final = np.array_equal(result.image, final)
    assert (is_measured, is_updated, is_final) == (True, False, False), (
        f"best iteration {best} of {params.iterations}: the result is the image measured "
        f"there {is_measured}, the image its update made {is_updated}, the last {is_final}"
    )


def test_loss_falls_from_noise(content, style, fast) -> None:
    result = transfer(content, [style], replace(fast, init="noise"), weights="random")
    assert result.history[-1]["loss"] < 0.5 * result.history[0]["loss"]


def test_content_loss_is_zero_for_the_content_image_only(content, style, fast) -> None:
    own = evaluate(content, content, [style], fast, weights="random")
    assert own["content"] == 0.0
    assert own["style"] > 0 and own["tv"] > 0
    other = evaluate(smooth_image(36, 48, seed=5), content, [style], fast, weights="random")
    assert other["content"] > 0
    # and the loop starts there: iteration 1 measures the content image itself
    first = transfer(content, [style], replace(fast, iterations=1), weights="random").history[0]
    assert first["content"] == pytest.approx(0.0, abs=1e-6 * first["loss"])


def test_content_term_pulls_towards_the_content(content, style, fast) -> None:
    """From noise, a content-only run must approach the content image (the reference
    article's content_cost compared style Grams and never did)."""
    params = replace(
        fast,
        content_layers=(("block2_conv1", 1.0),),  # shallow: features pin down the pixels
        style_layers=(("block1_conv1", 1.0),),
        style_weight=0.0,
        tv_weight=0.0,
        init="noise",
        iterations=30,
        learning_rate=0.05,
        beta_1=0.9,
    )
    result = transfer(content, [style], params, weights="random")
    target = to_float01(content)
    start = np.random.default_rng(params.seed).random(target.shape, dtype=np.float32)
    gap = np.abs(to_float01(result.image) - target).mean()
    assert gap < 0.5 * np.abs(start - target).mean(), gap


def test_extractor_built_once_and_step_traced_once_across_jobs() -> None:
    # layers no other test uses, so the first build happens here
    params = replace(
        FAST,
        content_layers=(("block2_conv2", 1.0),),
        style_layers=(("block1_conv2", 1.0), ("block2_conv1", 0.5)),
        iterations=2,
    )
    builds, traces = ex.build_count(), step_tf.trace_count()
    transfer(smooth_image(32, 40), [stripes(32, 32)], params, weights="random")
    transfer(
        smooth_image(48, 36, seed=3),
        [dots(40, 40)],
        replace(params, content_weight=5.0),
        weights="random",
    )
    assert ex.build_count() == builds + 1
    assert step_tf.trace_count() == traces + 1  # other size, other weights: same graph


def test_style_grams_are_cached_across_jobs(content, style, fast) -> None:
    engine_core.clear_style_cache()
    before = dict(engine_core.style_cache_stats)
    transfer(content, [style], replace(fast, iterations=1), weights="random")
    transfer(content, [style], replace(fast, iterations=1, content_weight=1.0), weights="random")
    assert engine_core.style_cache_stats["misses"] == before["misses"] + 1
    assert engine_core.style_cache_stats["hits"] == before["hits"] + 1


def test_seeded_runs_repeat_exactly(content, style, fast) -> None:
    params = replace(fast, init="noise", seed=7)
    a = transfer(content, [style], params, weights="random")
    b = transfer(content, [style], params, weights="random")
    assert np.array_equal(a.image, b.image)
    assert [h["loss"] for h in a.history] == [h["loss"] for h in b.history]
    c = transfer(content, [style], replace(params, seed=8), weights="random")
    assert not np.array_equal(a.image, c.image)


@pytest.mark.parametrize("k", [1, 3])
def test_cancel_stops_within_one_iteration(content, style, fast, k: int) -> None:
    seen: list[int] = []
    asked: list[int] = []

    def should_stop() -> bool:
        asked.append(len(seen))
        return len(seen) >= k

    result = transfer(
        content,
        [style],
        replace(fast, iterations=50),
        weights="random",
        on_iteration=lambda r: seen.append(r.iteration),
        should_stop=should_stop,
    )
    assert result.iterations_done == k and result.stopped
    assert seen == list(range(1, k + 1)) and len(result.history) == k
    assert asked[-1] == k


def test_no_stop_when_never_asked_to(content, style, fast) -> None:
    result = transfer(content, [style], fast, weights="random", should_stop=lambda: False)
    assert result.iterations_done == fast.iterations and not result.stopped


def test_snapshots_every_n_and_on_the_last_iteration(content, style, fast) -> None:
    reports: list[IterationReport] = []
    transfer(
        content,
        [style],
        replace(fast, iterations=7, snapshot_every=3),
        weights="random",
        on_iteration=reports.append,
    )
    with_snap = [r.iteration for r in reports if r.snapshot is not None]
    assert with_snap == [3, 6, 7]
    snap = reports[-1].snapshot
    assert snap is not None and snap.dtype == np.uint8 and snap.shape == content.shape


def test_content_is_resized_to_max_size_and_style_by_scale(style, fast) -> None:
    big = smooth_image(60, 90)
    result = transfer(big, [style], replace(fast, max_size=30, iterations=1), weights="random")
    assert result.image.shape == (20, 30, 3)
    # style_scale changes the style target (Grams of a differently sized style image)
    base = replace(fast, max_size=48, iterations=4)
    one = transfer(big, [stripes(64, 64)], base, weights="random")
    half = transfer(big, [stripes(64, 64)], replace(base, style_scale=0.5), weights="random")
    assert not np.array_equal(one.image, half.image)


def test_multi_style_blend_changes_the_output_and_weights_matter(content, fast) -> None:
    params = replace(fast, iterations=6)
    a, b = stripes(40, 40), dots(40, 40)
    only_a = transfer(content, [a], params, weights="random").image
    mixed = transfer(content, [a, b], params, weights="random").image
    mostly_b = transfer(content, [a, b], replace(params, style_blend=(0.1, 0.9)), weights="random")
    mostly_a = transfer(content, [a, b], replace(params, style_blend=(1.0, 0.0)), weights="random")
    assert not np.array_equal(only_a, mixed)
    assert not np.array_equal(mixed, mostly_b.image)
    # blend (1, 0) is the single style: the same targets, so the same image
    assert np.array_equal(only_a, mostly_a.image)


def test_preserve_colors_keeps_the_content_chroma(content, fast) -> None:
    params = replace(fast, iterations=10, learning_rate=0.05)
    style = stripes(40, 40, colours=((250, 0, 250), (0, 250, 0)))  # loud colours
    plain = transfer(content, [style], params, weights="random").image
    kept = transfer(content, [style], replace(params, preserve_colors=True), weights="random").image

    def chroma_gap(img: np.ndarray) -> float:
        diff = rgb_to_ycbcr(to_float01(img))[..., 1:] - rgb_to_ycbcr(to_float01(content))[..., 1:]
        return float(np.abs(diff).mean())

    assert chroma_gap(kept) < 0.01
    assert chroma_gap(plain) > 2 * chroma_gap(kept)
    # luminance still comes from the stylised image
    y_plain = rgb_to_ycbcr(to_float01(plain))[..., 0]
    y_kept = rgb_to_ycbcr(to_float01(kept))[..., 0]
    assert np.abs(y_plain - y_kept).mean() < 0.02


def test_mixed_bfloat16_runs_close_to_float32(content, style, fast) -> None:
    f32 = transfer(content, [style], fast, weights="random")
    bf16 = transfer(content, [style], replace(fast, precision="mixed_bfloat16"), weights="random")
    assert all(np.isfinite(h["loss"]) for h in bf16.history)
    assert bf16.history[-1]["loss"] < bf16.history[0]["loss"]
    assert bf16.best_loss == pytest.approx(f32.best_loss, rel=0.1)
    # it really ran in bfloat16: its own model computes in bf16 (weights kept in float32),
    # and its numbers differ from the float32 run's
    model = get_extractor("random", ex.canonical_layers(_layers(fast)), "mixed_bfloat16").model
    conv = model.get_layer("block1_conv1")
    assert (conv.compute_dtype, conv.variable_dtype) == ("bfloat16", "float32")
    assert [h["loss"] for h in bf16.history] != [h["loss"] for h in f32.history]


def _layers(params: TransferParams) -> tuple[str, ...]:
    return tuple(n for n, _ in params.content_layers + params.style_layers)


def test_too_small_content_is_refused(style, fast) -> None:
    with pytest.raises(ValueError, match="at least 16 px"):
        transfer(smooth_image(8, 40), [style], fast, weights="random")


def test_after_warm_up_a_job_builds_and_traces_nothing() -> None:
    """warm_up() pays for the model and the compiled graphs; a real job after it (another
    size, two styles, other weights, snapshots, colours kept) builds and traces nothing."""
    # layers no other test uses, so the warm-up is the first to need them
    params = replace(
        FAST,
        content_layers=(("block3_conv1", 1.0),),
        style_layers=(("block1_conv1", 1.0), ("block2_conv2", 0.5)),
    )
    content_layers = tuple(n for n, _ in params.content_layers)
    style_layers = tuple(n for n, _ in params.style_layers)
    builds, traces = ex.build_count(), step_tf.trace_count()
    warm_up("random", params)
    assert ex.build_count() == builds + 1  # the warm-up built the model...
    assert step_tf.trace_count() == traces + 1  # ...and traced the step

    extractor = get_extractor("random", ex.canonical_layers(_layers(params)), "float32")
    assert ex.build_count() == builds + 1, "the warm-up's model was not kept"
    step = step_tf.get_step(extractor, content_layers, style_layers)
    features = step_tf.get_features(extractor)
    step_traces = step.experimental_get_tracing_count()
    feature_traces = features.experimental_get_tracing_count()
    assert (step_traces, feature_traces) == (1, 1)

    reports: list[IterationReport] = []
    result = transfer(
        smooth_image(40, 56, seed=2),
        [stripes(48, 48), dots(40, 40)],
        replace(params, max_size=56, iterations=3, content_weight=3.0, snapshot_every=2,
                preserve_colors=True, style_blend=(0.7, 0.3)),
        weights="random",
        on_iteration=reports.append,
    )  # fmt: skip
    assert result.iterations_done == 3 and result.image.shape == (40, 56, 3)
    assert ex.build_count() == builds + 1, "the job built another model"
    assert step_tf.trace_count() == traces + 1, "the job traced the step again"
    assert step.experimental_get_tracing_count() == step_traces
    assert features.experimental_get_tracing_count() == feature_traces


def test_invalid_params_are_refused_by_transfer(content, style, fast) -> None:
    with pytest.raises(ParamError) as info:
        transfer(content, [style], replace(fast, iterations=0), weights="random")
    assert info.value.field == "iterations"
    with pytest.raises(ParamError) as info:
        transfer(content, [], fast, weights="random")
    assert info.value.field == "style"
    with pytest.raises(ParamError) as info:
        transfer(content, [style], replace(fast, style_blend=(1.0, 1.0)), weights="random")
    assert info.value.field == "style_blend"


def test_transfer_is_not_held_to_a_services_limits(content, style, fast) -> None:
    """The engine checks validity only (shared/params.py, tested in tests/shared); a service
    applies its own Limits when it takes a job, and the CLI none."""
    service = Limits()
    big = replace(fast, iterations=2, max_size=service.max_size * 4)  # content is not enlarged
    result = transfer(content, [style] * (service.max_styles + 1), big, weights="random")
    assert result.iterations_done == 2 and result.image.shape == content.shape
