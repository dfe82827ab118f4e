"""The memory model: VGG19's shape, the estimate's terms, tiles, plans within a budget."""

from __future__ import annotations

from dataclasses import replace

import pytest

from stylequeue.shared import memory
from stylequeue.shared.memory import (
    ALIGN,
    BudgetError,
    activation_values,
    estimate_memory,
    estimate_tiled_memory,
    fits,
    halo,
    largest_size,
    make_tiles,
    parse_bytes,
    plan,
    receptive_extent,
    split,
)
from stylequeue.shared.params import TransferParams

DEFAULT = TransferParams(precision="mixed_bfloat16")
LAYERS = [n for n, _ in DEFAULT.content_layers + DEFAULT.style_layers]
GB = 10**9


def test_the_receptive_field_of_block5_conv2_is_188_px_and_its_halo_96() -> None:
    # a block5 feature stands for a 16 px cell and sees 86 px beyond it on each side
    assert receptive_extent("block5_conv2") == 86
    assert 16 + 2 * 86 == 188
    assert halo(LAYERS) == 96  # rounded up to the 16 px alignment
    assert receptive_extent("block1_conv1") == 1
    assert receptive_extent("block2_conv2") == 6
    assert halo(["block1_conv1", "block2_conv2"]) == ALIGN


def test_activation_values_count_every_layer_up_to_the_deepest() -> None:
    # convolutions 2x64 + 2x128/4 + 4x256/16 + 4x512/64 + 2x512/256, poolings 64/4 + 128/16
    # + 256/64 + 512/256
    assert activation_values(LAYERS) == 292 + 30
    assert activation_values(["block1_conv1"]) == 64
    assert activation_values(["block1_conv2", "block1_conv1"]) == 128


def test_split_covers_the_length_on_multiples_of_16_in_even_cores() -> None:
    assert split(4096, 1300) == ((0, 1024), (1024, 2048), (2048, 3072), (3072, 4096))
    assert split(1000, 512) == ((0, 512), (512, 1000))
    assert split(100, 512) == ((0, 100),)
    for length, core in [(4096, 700), (1023, 100), (333, 64)]:
        parts = split(length, core)
        assert parts[0][0] == 0 and parts[-1][1] == length
        assert all(a % ALIGN == 0 and b - a <= core for a, b in parts)
        assert all(parts[i][1] == parts[i + 1][0] for i in range(len(parts) - 1))


def test_tiles_are_padded_by_the_halo_and_clipped_to_the_image() -> None:
    tiles = make_tiles((1000, 1024), 512, LAYERS)
    assert tiles.count == 4 and tiles.halo == 96
    assert tiles.padded(0, 512, 1000) == (0, 608)
    assert tiles.padded(512, 1000, 1000) == (416, 1000)
    assert tiles.largest_padded(1000, 1024) == (608, 608)


def test_the_estimate_grows_with_pixels_and_precision() -> None:
    fit = memory.CPU_FITS["mixed_bfloat16"]
    # small: the process at rest plus what the kept activations add
    small = (estimate_memory(512, DEFAULT) - estimate_memory(256, DEFAULT)) / (512**2 - 256**2)
    assert small == pytest.approx(fit.kept * 322 + 12 * 2, rel=1e-5)
    assert estimate_memory(256, DEFAULT) == pytest.approx(fit.base + 256**2 * small, rel=1e-6)
    # large: the step's whole working set, which takes over what the process held
    large = (estimate_memory(4096, DEFAULT) - estimate_memory(2048, DEFAULT)) / (4096**2 - 2048**2)
    assert large == pytest.approx(fit.whole * 322 + 12 * 2, rel=1e-5)
    assert large > small
    assert estimate_memory(1024, DEFAULT, "float32") > estimate_memory(1024, DEFAULT)
    assert estimate_memory((768, 1024), DEFAULT) < estimate_memory(1024, DEFAULT)
    assert estimate_memory(1024, DEFAULT, device="gpu") != estimate_memory(1024, DEFAULT)
    avx2 = memory.CPU_AVX2_FITS["float32"]
    assert estimate_memory(1024, DEFAULT, "float32", device="cpu-avx2") == pytest.approx(
        avx2.base + 1024**2 * (avx2.kept * 322 + 12 * 2), rel=1e-6
    )
    with pytest.raises(ValueError, match="device"):
        estimate_memory(1024, DEFAULT, device="tpu")


def test_lbfgs_counts_its_history_of_whole_image_vectors() -> None:
    side = 3000  # the step's whole working set decides there, with or without L-BFGS
    adam = estimate_memory(side, DEFAULT, optimizer="adam")
    lbfgs = estimate_memory(side, DEFAULT, optimizer="lbfgs")  # history 10 by default
    # (2m + 2) vectors instead of Adam's 2: 20 more of 12 bytes a pixel
    assert lbfgs - adam == pytest.approx(side * side * 12 * 20, abs=2)
    five = estimate_memory(side, DEFAULT, optimizer="lbfgs", history=5)
    assert five - adam == pytest.approx(side * side * 12 * 10, abs=2)
    # unless given, the job's own history length counts
    assert estimate_memory(side, replace(DEFAULT, optimizer="lbfgs", lbfgs_history=5)) == five
    with pytest.raises(ValueError, match="optimizer"):
        estimate_memory(1000, DEFAULT, optimizer="sgd")


def test_a_parameter_set_with_an_optimizer_is_read() -> None:
    class WithOptimizer:
        content_layers = DEFAULT.content_layers
        style_layers = DEFAULT.style_layers
        precision = DEFAULT.precision
        optimizer = "lbfgs"

    assert estimate_memory(800, WithOptimizer()) == estimate_memory(800, DEFAULT, None, "lbfgs")


def test_plan_is_untiled_while_it_fits_then_the_largest_tiles_that_do() -> None:
    untiled = estimate_memory(4096, DEFAULT)
    assert plan(4096, DEFAULT, None).tiled is False
    assert plan(4096, DEFAULT, untiled).tiled is False
    tiled = plan(4096, DEFAULT, 6 * GB)
    assert tiled.tiled and tiled.estimate <= 6 * GB < untiled == tiled.untiled_estimate
    assert tiled.core is not None and tiled.core % ALIGN == 0
    bigger = memory.largest_core(4096, DEFAULT, 6 * GB)
    assert bigger == tiled.core
    # the next core up would not fit
    assert estimate_tiled_memory(4096, tiled.core + ALIGN, DEFAULT) > 6 * GB
    assert plan(1024, DEFAULT, None, core=256).core == 256  # forced


def test_a_job_that_fits_no_tiling_is_refused_with_the_estimate_and_the_budget() -> None:
    with pytest.raises(BudgetError) as info:
        plan(4096, DEFAULT, 1 * GB)
    err = info.value
    assert err.budget == GB and err.estimate > GB
    assert "4096x4096 px" in str(err) and "1 GB" in str(err)
    assert memory.format_bytes(err.estimate) in str(err)


def test_lbfgs_above_the_budget_is_refused_not_tiled() -> None:
    lbfgs = replace(DEFAULT)
    untiled = estimate_memory(2048, lbfgs, optimizer="lbfgs")
    assert plan(2048, lbfgs, untiled, optimizer="lbfgs").tiled is False
    with pytest.raises(BudgetError, match="only Adam runs in tiles") as info:
        plan(2048, lbfgs, untiled - 1, optimizer="lbfgs")
    assert info.value.estimate == untiled
    with pytest.raises(ValueError, match="only Adam"):
        plan(512, lbfgs, None, optimizer="lbfgs", core=256)


def test_largest_size_is_the_edge_of_what_fits() -> None:
    budget = 6 * GB
    side = largest_size(budget, DEFAULT)
    assert side > 4096  # tiles: far beyond the untiled edge
    assert fits(side, DEFAULT, budget) and not fits(side + 1, DEFAULT, budget)
    untiled_side = largest_size(budget, DEFAULT, optimizer="lbfgs")  # no tiles for L-BFGS
    assert estimate_memory(untiled_side, DEFAULT, optimizer="lbfgs") <= budget
    assert estimate_memory(untiled_side + 1, DEFAULT, optimizer="lbfgs") > budget
    # a wide picture goes further than a square one
    assert largest_size(budget, DEFAULT, aspect=0.5) > side
    assert largest_size(10**6, DEFAULT) == 0  # not even the process fits
    assert largest_size(10**15, DEFAULT, cap=2048) == 2048


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("6GB", 6 * 10**9),
        ("6gb", 6 * 10**9),
        ("6G", 6 * 10**9),
        ("1.5 GB", 1_500_000_000),
        ("512MiB", 512 * 2**20),
        ("2GiB", 2 * 2**30),
        ("800000", 800_000),
        ("64k", 64_000),
    ],
)
def test_parse_bytes(text: str, value: int) -> None:
    assert parse_bytes(text) == value


@pytest.mark.parametrize("text", ["", "lots", "6 GBs", "-1GB", "0", "0GB", "1.5.2G"])
def test_parse_bytes_refuses_what_is_not_a_size(text: str) -> None:
    with pytest.raises(ValueError):
        parse_bytes(text)


def test_output_shape_is_the_engines_resize() -> None:
    assert memory.output_shape(4000, 3000, 1024) == (768, 1024)
    assert memory.output_shape(300, 200, 1024) == (200, 300)  # never enlarged
