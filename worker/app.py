"""The worker's Celery app: ``celery -A stylequeue.worker.app worker -Q style -c 1 --pool prefork``.

The parent process never imports TensorFlow: it only receives messages and supervises the
pool. Each prefork child, once forked, drops inherited DB pools, imports the engine, turns
GPU memory growth on, warms the VGG19 extractor (so the first job does not pay for it) and
announces itself in the fleet registry every ~30 s until it shuts down: its weights and
precision, the device it computes on, its memory budget (``worker.budget``: what the web
admits jobs by) and its memory at each beat (GPU memory in use where it runs on a GPU, else
the process's resident memory), for the fleet view.

Preemption: SIGTERM reaches only the parent (Celery's warm shutdown: stop consuming, wait
for the running task; the pool child does not get the signal). The parent's
``worker_shutting_down`` hook sends SIGUSR2 to its pool children; a child's handler sets the
process-wide preempt flag (``worker.stop_signal``), so its running job checkpoints at the
next iteration, goes back to ``queued`` and is re-sent (``worker.runner``,
``worker.tasks``); the task returns, and the worker exits.
"""

from __future__ import annotations

import contextlib
import logging
import os
import resource
import signal
import socket
import threading
import time
from dataclasses import replace
from typing import Any

from celery.signals import (
    celeryd_after_setup,
    worker_init,
    worker_process_init,
    worker_process_shutdown,
    worker_shutting_down,
)

import stylequeue.worker.tasks  # noqa: F401  (registers run_job and sweep_queued)
from stylequeue.shared.celery_app import WEBHOOKS_QUEUE, create_celery
from stylequeue.shared.settings import EngineSettings, get_settings
from stylequeue.worker.budget import worker_budget
from stylequeue.worker.stop_signal import request_preempt

log = logging.getLogger("stylequeue.worker")

celery = create_celery()
# Building the warm extractor in worker_process_init takes seconds (TensorFlow import, VGG19);
# Celery's default 4 s would SIGKILL the child before it reports up.
celery.conf.worker_proc_alive_timeout = 600.0

HEARTBEAT_SECONDS = 30.0
PREEMPT_SIGNAL = signal.SIGUSR2  # parent -> pool child: checkpoint and requeue your job


class _ChildState:
    """What this process knows about itself, for the fleet registry."""

    nodename: str = ""  # set in the parent before the fork (celeryd_after_setup)
    worker: Any = None  # the parent's WorkController (worker_init), for its pool's pids
    info: dict[str, Any] = {}
    stop = threading.Event()


@celeryd_after_setup.connect
def _remember_nodename(sender: str, **_: Any) -> None:
    _ChildState.nodename = sender


@celeryd_after_setup.connect
def _never_take_webhooks(sender: str, instance: Any, **_: Any) -> None:
    """A GPU worker never consumes the ``webhooks`` queue, whatever ``-Q`` says: a slow
    receiver must not hold a GPU, and the light hooks worker delivers them."""
    queues = instance.app.amqp.queues
    if WEBHOOKS_QUEUE in queues.consume_from:
        log.warning("%s: not consuming the %s queue (the hooks worker's)", sender, WEBHOOKS_QUEUE)
        queues.deselect(WEBHOOKS_QUEUE)


@worker_init.connect
def _remember_worker(sender: Any, **_: Any) -> None:
    _ChildState.worker = sender


@worker_shutting_down.connect
def _preempt_children(how: str = "", **_: Any) -> None:
    """In the parent, from its signal handler: a warm shutdown (SIGTERM) asks each pool
    child to preempt its running job. Best effort: a cold shutdown kills them anyway."""
    if how != "Warm":
        return
    for pid in pool_pids(_ChildState.worker):
        with contextlib.suppress(OSError):  # exited meanwhile
            os.kill(pid, PREEMPT_SIGNAL)


def pool_pids(worker: Any) -> list[int]:
    """The prefork pool's child pids ([] before the pool is up, or another pool)."""
    try:
        return [int(p.pid) for p in worker.pool._pool._pool if p.pid]
    except AttributeError:
        return []


def _on_preempt_signal(signum: int, frame: Any) -> None:
    request_preempt()


@worker_process_init.connect
def _init_child(**_: Any) -> None:
    from stylequeue.shared.db import dispose_all

    signal.signal(PREEMPT_SIGNAL, _on_preempt_signal)  # first: the parent may send it now

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
        **device_info(),
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
    # measured once the model is warm (on a GPU, TensorFlow holds it already)
    budget = worker_budget(knobs, info.get("device"))
    info.update(memory_budget=budget.bytes, memory_budget_source=budget.source)
    return info


def _gpu_memory_growth() -> None:
    """Allocate GPU memory as needed, so one worker per GPU does not grab it all at once."""
    import tensorflow as tf

    for gpu in tf.config.list_physical_devices("GPU"):
        try:
            tf.config.experimental.set_memory_growth(gpu, True)
        except RuntimeError as exc:  # already initialised: too late, and harmless
            log.debug("memory growth for %s: %s", gpu.name, exc)


def device_info() -> dict[str, Any]:
    """``{"device": "GPU"|"CPU", "device_name": ..., "devices": n}`` for the fleet view."""
    import tensorflow as tf

    try:
        gpus = tf.config.list_physical_devices("GPU")
    except RuntimeError as exc:  # a broken driver: say so rather than guess
        log.warning("could not list GPUs: %s", exc)
        return {"device": None, "device_name": None, "devices": None}
    if gpus:
        try:
            name = tf.config.experimental.get_device_details(gpus[0]).get("device_name")
        except (RuntimeError, ValueError):
            name = None
        return {"device": "GPU", "device_name": name, "devices": len(gpus)}
    return {"device": "CPU", "device_name": cpu_model(), "devices": os.cpu_count()}


def cpu_model(cpuinfo: str | None = None) -> str | None:
    """The CPU's model name from /proc/cpuinfo (None elsewhere)."""
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo") as fh:
                cpuinfo = fh.read()
        except OSError:
            return None
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name" and value.strip():
            return value.strip()
    return None


def memory_info(device: str | None) -> dict[str, Any] | None:
    """This process's memory now: the first GPU's allocator (``kind: gpu``) where it runs
    on a GPU, else its resident set (``kind: rss``); bytes. None when it cannot be read."""
    if device == "GPU":
        try:
            import tensorflow as tf

            used = tf.config.experimental.get_memory_info("GPU:0")
            return {"kind": "gpu", "used_bytes": int(used["current"]),
                    "peak_bytes": int(used["peak"])}  # fmt: skip
        except (ImportError, RuntimeError, ValueError, KeyError):
            return None
    try:
        with open("/proc/self/statm") as fh:
            resident_pages = int(fh.read().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    used = resident_pages * os.sysconf("SC_PAGE_SIZE")
    # the kernel's high-water mark (KiB on Linux) lags the current figure a little
    peak = max(used, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    return {"kind": "rss", "used_bytes": used, "peak_bytes": peak}


def _heartbeat() -> None:
    from stylequeue.shared import fleet
    from stylequeue.shared.redis_client import redis_client

    client = redis_client(get_settings().redis_url)
    while True:
        try:
            memory = memory_info(_ChildState.info.get("device"))
            info = {**_ChildState.info, "pid": os.getpid(), "memory": memory}
            fleet.announce(client, fleet_name(), info)
        except Exception as exc:  # Redis away: try again next beat
            log.warning("fleet heartbeat failed: %s", exc)
        if _ChildState.stop.wait(HEARTBEAT_SECONDS):
            return
