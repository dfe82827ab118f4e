"""Engine exceptions, importable without TensorFlow (the CLI and the worker catch them)."""

from __future__ import annotations

WEIGHTS_ENV = "STYLEQUEUE_VGG19_WEIGHTS"


class WeightsUnavailable(RuntimeError):
    """The VGG19 weights asked for cannot be had. Raised at once; never a silent fallback.

    The message is one line and says what to do: point ``STYLEQUEUE_VGG19_WEIGHTS`` at a local
    file, or use ``random`` weights for tests and offline demos.
    """

    def __init__(self, weights: str, reason: str) -> None:
        self.weights = weights
        self.reason = reason
        super().__init__(
            f"VGG19 weights {weights!r} unavailable: {reason}. Set {WEIGHTS_ENV} to a local "
            "Keras VGG19 .h5/.keras file (e.g. vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5), "
            f"or use {WEIGHTS_ENV}=random (seeded random weights, for tests and offline demos)."
        )
