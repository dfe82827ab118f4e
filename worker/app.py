"""The worker's Celery app: ``celery -A stylequeue.worker.app worker -Q style -c 1 --pool prefork``.

The parent process never imports TensorFlow: it only receives messages and supervises the
pool. Each prefork child, once forked, drops inherited DB pools, imports the engine, turns
GPU memory growth on, warms the VGG19 extractor (so the first job does not pay for it) and
announces itself in the fleet registry every ~30 s until it shuts down.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from dataclasses import replace
from typing import Any

from celery.signals import celeryd_after_setup, worker_process_init, worker_process_shutdown

import stylequeue.worker.tasks  # noqa: F401  (registers run_job and sweep_queued)
from stylequeue.shared.celery_app import create_celery
from stylequeue.shared.settings import EngineSettings, get_settings

log = logging.getLogger("stylequeue.worker")

celery = create_celery()
# Building the warm extractor in worker_process_init takes seconds (TensorFlow import, VGG19);
# Celery's default 4 s would SIGKILL the child before it reports up.
celery.conf.worker_proc_alive_timeout = 600.0

HEARTBEAT_SECONDS = 30.0


class _ChildState:
    """What this process knows about itself, for the fleet registry."""

    nodename: str = ""  # set in the parent before the fork (celeryd_after_setup)
    info: dict[str, Any] = {}
    stop = threading.Event()


@celeryd_after_setup.connect
def _remember_nodename(sender: str, **_: Any) -> None:
    _ChildState.nodename = sender


@worker_process_init.connect
def _init_child(**_: Any) -> None:
    from stylequeue.shared.db import dispose_all

    dispose_all()  # never share a parent's sockets with the child
    settings = get_settings()
    _ChildState.info = warm_engine(settings.engine)
    _ChildState.stop.clear()
    threading.Thread(target=_heartbeat, name="fleet-heartbeat", daemon=True).start()


@worker_process_shutdown.connect
def _retire_child(**_: Any) -> None:
    from stylequeue.shared import fleet
    from stylequeue.shared.redis_client import redis_client

    _ChildState.stop.set()
    try:
        client = redis_client(get_settings().redis_url)
        fleet.retire(client, fleet_name())
        client.close()
    except Exception as exc:  # shutting down: the key expires on its own
        log.debug("could not retire from the fleet: %s", exc)


def fleet_name() -> str:
    return _ChildState.nodename or f"{socket.gethostname()}/{os.getpid()}"


def warm_engine(knobs: EngineSettings) -> dict[str, Any]:
    """Import the engine and build the extractor; return the fleet info. Logs one line."""
    weights = knobs.vgg19_weights
    _gpu_memory_growth()
    from stylequeue.shared.params import TransferParams
    from stylequeue.worker import engine
    from stylequeue.worker.engine.hardware import resolve_precision

    precision = resolve_precision(knobs.precision)

    started = time.monotonic()
    info: dict[str, Any] = {
        "weights": weights, "weights_ok": True, "weights_error": None, "error": None,
        "precision": precision, "pid": os.getpid(), "host": socket.gethostname(),
    }  # fmt: skip
    try:
        engine.warm_up(
            weights,
            replace(TransferParams(), precision=precision),
            xla=knobs.xla,
            deterministic=knobs.deterministic,
        )
    except engine.WeightsUnavailable as exc:
        info.update(weights_ok=False, weights_error=str(exc), error=str(exc))
        # The message already names the weights, STYLEQUEUE_VGG19_WEIGHTS and `random`.
        log.warning("WARNING: %s Jobs that need these weights will fail.", exc)
        return info
    except Exception as exc:  # a broken engine must not keep the pool from starting
        info.update(weights_ok=False, error=f"{type(exc).__name__}: {exc}")
        log.exception("extractor warm-up failed")
        return info
    log.info(
        "extractor warm: weights=%s, precision=%s, took %.1fs",
        weights, precision, time.monotonic() - started,
    )  # fmt: skip
    return info


def _gpu_memory_growth() -> None:
    """Allocate GPU memory as needed, so one worker per GPU does not grab it all at once."""
    import tensorflow as tf

    for gpu in tf.config.list_physical_devices("GPU"):
        try:
            tf.config.experimental.set_memory_growth(gpu, True)
        except RuntimeError as exc:  # already initialised: too late, and harmless
            log.debug("memory growth for %s: %s", gpu.name, exc)


def _heartbeat() -> None:
    from stylequeue.shared import fleet
    from stylequeue.shared.redis_client import redis_client

    client = redis_client(get_settings().redis_url)
    while True:
        try:
            fleet.announce(client, fleet_name(), {**_ChildState.info, "pid": os.getpid()})
        except Exception as exc:  # Redis away: try again next beat
            log.warning("fleet heartbeat failed: %s", exc)
        if _ChildState.stop.wait(HEARTBEAT_SECONDS):
            return
