"""The engine's host knobs (XLA, op determinism) come in as arguments, never from the
environment; each iteration's report and the history entry are one record."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from engine_samples import FAST, smooth_image, stripes

from stylequeue.worker.engine import step_tf
from stylequeue.worker.engine.core import IterationReport, transfer


@pytest.fixture
def built(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Record what each new step is built with; build it without XLA (compiling costs time)."""
    calls: list[dict[str, Any]] = []
    real_build = step_tf._build_step
    real_determinism = step_tf.ensure_determinism

    def build(extractor: Any, content_layers: Any, style_layers: Any, xla: bool) -> Any:
        calls.append({"xla": xla})
        return real_build(extractor, content_layers, style_layers, False)

    def determinism(wanted: bool | None = None) -> None:
        calls.append({"deterministic": wanted})
        if wanted is not True:  # never switch it on for the whole test process
            real_determinism(wanted)

    monkeypatch.setattr(step_tf, "_build_step", build)
    monkeypatch.setattr(step_tf, "ensure_determinism", determinism)
    return calls


def _params(layer: str) -> Any:
    # a layer set of its own, so the step is built here rather than found in the cache
    return replace(
        FAST, content_layers=((layer, 1.0),), style_layers=(("block1_conv1", 1.0),), iterations=1
    )


def test_knobs_are_passed_to_the_step(built: list[dict[str, Any]]) -> None:
    transfer(smooth_image(32, 32), [stripes(32, 32)], _params("block3_conv1"),
             weights="random", xla=True, deterministic=False)  # fmt: skip
    assert {"xla": True} in built and {"deterministic": False} in built


def test_the_environment_is_not_read(
    built: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STYLEQUEUE_ENGINE_XLA", "1")
    monkeypatch.setenv("STYLEQUEUE_ENGINE_DETERMINISTIC", "1")
    transfer(smooth_image(32, 32), [stripes(32, 32)], _params("block3_conv2"), weights="random")
    assert {"xla": False} in built and {"deterministic": None} in built  # the defaults


def test_history_entries_are_the_reports() -> None:
    reports: list[IterationReport] = []
    result = transfer(smooth_image(32, 32), [stripes(32, 32)], replace(FAST, iterations=3),
                      weights="random", on_iteration=reports.append)  # fmt: skip
    assert [r.iteration for r in reports] == [1, 2, 3]
    assert result.history == [r.as_dict() for r in reports]
    assert set(result.history[0]) == {"iteration", "loss", "content", "style", "tv", "elapsed"}
