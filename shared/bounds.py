"""The intrinsic upper bounds of what a job may ask for, where the domain itself has none.

Constants only, importing nothing: the parameter table (:mod:`stylequeue.shared.params`,
which imports :class:`~stylequeue.shared.settings.Limits`) checks parameters against them,
and the settings loader (:mod:`stylequeue.shared.settings`) refuses a deployment limit
(``STYLEQUEUE_MAX_*``) above them, so a server never advertises or accepts what validation
would then refuse.
"""

from __future__ import annotations

# Far past any useful run, and past what any accelerator holds (VGG19's first layers at
# 32768 px need hundreds of GB).
MAX_ITERATIONS = 10**7
MAX_SIZE = 1 << 15  # longest side of the output, px
MAX_STYLES = 64  # style images blended in one job (each costs a VGG19 pass)
