"""Engine test fixtures: small synthetic images, random weights, few iterations.

The extractor and the compiled step are process-level caches, so tests that use the same
layers and precision share one model; keep the layer sets few.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from engine_samples import FAST, smooth_image, stripes

from stylequeue.shared.params import TransferParams


@pytest.fixture
def content() -> np.ndarray:
    return smooth_image(36, 48)


@pytest.fixture
def style() -> np.ndarray:
    return stripes(40, 40)


@pytest.fixture
def fast() -> TransferParams:
    return FAST
