"""Queue benchmark: submit-to-first-progress latency and what the job loop costs the host.

    python bench/queue_latency.py [--jobs 10] [--size 64] [--sizes 32,64] [--iterations 100]
                          [--snapshot-every 10] [--repeats 5] [--out FILE]

1. **Latency.** A warm worker (a real ``celery worker`` subprocess, prefork, one child that
   has already built the extractor), a private Redis (broker + progress), SQLite and folder
   storage. Each job is submitted as the web does -- input PNGs stored, row committed, task
   enqueued -- and the clock stops when the job's first progress entry appears in its Redis
   stream (blocking XREAD). Jobs run one after another; median and max over ``--jobs``.
2. **The loop**, in this process, at each of ``--sizes``: the bare engine (``transfer``
   without callbacks) and a full ``run_job`` attempt (``worker.runner.execute``: the stream,
   snapshots to storage, the row's progress, the cancel flag), alternating, ``--repeats``
   times. Measured per run: seconds per iteration (the loop's own clock), the **host time per
   iteration outside the compiled step** (stopwatches around each step call: the mean gap
   between one step's return and the next one's call, i.e. reading the losses, the engine's
   bookkeeping and every callback), the share of the loop spent inside the runner's
   callbacks, and, with a reader thread blocking on XREAD as a dashboard would, how long
   after its iteration ended each entry became visible. Last, a cancel: the Redis flag set
   mid-run as the web does, and the time until the loop stops.

Random weights (seeded), synthetic images; figures depend on the machine, see the header.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import redis  # noqa: E402

from stylequeue.shared.celery_app import create_celery  # noqa: E402
from stylequeue.shared.migrate import upgrade  # noqa: E402
from stylequeue.shared.params import TransferParams  # noqa: E402
from stylequeue.shared.progress import stream_key  # noqa: E402
from stylequeue.shared.settings import Settings, load_settings  # noqa: E402
from stylequeue.shared.storage import get_storage  # noqa: E402
from tests import services  # noqa: E402
from tests.factories import content_image, enqueue, get_job, make_job, style_image  # noqa: E402
from tests.worker_process import WorkerProcess, wait_for_status  # noqa: E402


def bench_settings(tmp: Path, redis_url: str) -> Settings:
    db = f"sqlite:///{tmp / 'bench.db'}"
    upgrade(db)
    return replace(
        load_settings(
            {"STYLEQUEUE_VAR_DIR": str(tmp / "var"), "STYLEQUEUE_VGG19_WEIGHTS": "random"}
        ),
        database_url=db,
        redis_url=redis_url,
        storage_url=f"file://{tmp / 'objects'}",
    )


# ---- 1. submit -> first progress entry --------------------------------------------------------


def measure_latency(settings: Settings, tmp: Path, args: argparse.Namespace) -> dict[str, Any]:
    params = replace(TransferParams(), iterations=10, max_size=args.size, snapshot_every=5, seed=1)
    content, style = content_image(args.size, args.size), style_image(args.size)
    app = create_celery(settings)
    client = redis.Redis.from_url(settings.redis_url)
    rows: list[dict[str, float]] = []
    with WorkerProcess(settings, tmp / "logs", name="bench").start() as worker:
        for _ in range(args.jobs):
            t0_wall, t0 = time.time(), time.perf_counter()
            job = make_job(settings, params=params, content=content, styles=[style])
            enqueue(settings, app, job.id)  # row committed first, then the task sent
            submitted = time.perf_counter() - t0
            got = client.xread({stream_key(job.id): "0"}, count=1, block=60_000)
            first = time.perf_counter() - t0
            if not got:
                raise RuntimeError(f"no progress within 60 s\n{worker.log_tail()}")
            done = wait_for_status(settings, job.id, "succeeded", "failed", worker=worker)
            if done.status != "succeeded":
                raise RuntimeError(f"bench job failed: {done.error}")
            started = get_job(settings, job.id).started_at
            assert started is not None
            rows.append(
                {"submit": submitted, "running": started.timestamp() - t0_wall, "first": first}
            )
    client.close()
    app.close()
    return {"rows": rows}


# ---- 2. the loop's host time, the callbacks, visibility and cancel ---------------------------


def per_iteration(entries: list[dict[str, Any]]) -> float:
    """Loop seconds per iteration after the first (the first carries one-off costs)."""
    return (entries[-1]["elapsed"] - entries[0]["elapsed"]) / (len(entries) - 1)


class LoopClock:
    """Stopwatches around the compiled step and the runner's callbacks (patched in for a run).

    The step call returns when the step is done on this CPU (TensorFlow runs eagerly and
    synchronously here), so the time between one step's return and the next step's call is
    the host's work per iteration outside the compiled step: reading the losses, the engine's
    bookkeeping, the callbacks, the checkpoint and stop checks.
    """

    def __init__(self) -> None:
        self.starts: list[float] = []
        self.ends: list[float] = []
        self.callbacks = 0.0
        self.ended: dict[int, float] = {}  # iteration -> monotonic time its callback began
        # monotonic time each step call returned: iteration k's end is step_ends[k - 1] (the
        # engine reads losses in groups, so a callback may come well after its step)
        self.step_ends: list[float] = []
        self.stopped_at: float | None = None  # when should_stop first said yes

    def host_us(self) -> float:
        """Mean host time between steps, in microseconds (the first gap left out)."""
        gaps = [b - a for a, b in zip(self.ends[1:-1], self.starts[2:], strict=True)]
        return 1e6 * statistics.fmean(gaps) if gaps else float("nan")

    def host_us_median(self) -> float:
        gaps = [b - a for a, b in zip(self.ends[1:-1], self.starts[2:], strict=True)]
        return 1e6 * statistics.median(gaps) if gaps else float("nan")


@contextmanager
def clocked(clock: LoopClock) -> Iterator[None]:
    """Patch the engine's step and the runner's callbacks with ``clock``'s stopwatches."""
    from stylequeue.worker import engine
    from stylequeue.worker.engine import step_tf

    real_get_step, real_transfer = step_tf.get_step, engine.transfer

    def timed_get_step(*a: Any, **kw: Any) -> Any:
        fn = real_get_step(*a, **kw)

        def timed(*args: Any) -> Any:
            clock.starts.append(time.perf_counter())
            out = fn(*args)
            clock.step_ends.append(time.monotonic())
            clock.ends.append(time.perf_counter())
            return out

        return timed

    def timed_transfer(
        *a: Any, on_iteration: Any = None, should_stop: Any = None, **kw: Any
    ) -> Any:
        def on_it(report: Any) -> None:
            t = time.perf_counter()
            clock.ended[int(report.iteration)] = time.monotonic()
            on_iteration(report)
            clock.callbacks += time.perf_counter() - t

        def stop() -> bool:
            t = time.perf_counter()
            try:
                said = bool(should_stop())
                if said and clock.stopped_at is None:
                    clock.stopped_at = time.monotonic()
                return said
            finally:
                clock.callbacks += time.perf_counter() - t

        if on_iteration is None:  # the bare engine: only the step is timed
            return real_transfer(*a, should_stop=should_stop, **kw)
        return real_transfer(*a, on_iteration=on_it, should_stop=stop, **kw)

    step_tf.get_step, engine.transfer = timed_get_step, timed_transfer
    try:
        yield
    finally:
        step_tf.get_step, engine.transfer = real_get_step, real_transfer


class StreamWatcher:
    """A dashboard in a thread: blocking XREAD on a job's stream, noting when each iteration
    became visible (monotonic clock of this process, like :class:`LoopClock`)."""

    def __init__(self, redis_url: str, job_id: str) -> None:
        self.client = redis.Redis.from_url(redis_url)
        self.key = stream_key(job_id)
        self.seen: dict[int, float] = {}
        self.order: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        last = "0"
        while not self._stop.is_set():
            got = self.client.xread({self.key: last}, count=10_000, block=100)
            now = time.monotonic()
            for _, rows in got or []:
                for sid, fields in rows:
                    last = sid.decode()
                    it = int(fields[b"iteration"])
                    self.seen.setdefault(it, now)
                    self.order.append(it)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.client.close()


def run_params(
    size: int, args: argparse.Namespace, iterations: int | None = None
) -> TransferParams:
    """The jobs' parameters; the bare engine runs at the worker's precision (``auto``: bf16
    on a CPU with AVX512-BF16), as ``run_job`` does."""
    from stylequeue.worker.engine.hardware import resolve_precision

    return replace(
        TransferParams(),
        iterations=iterations or args.iterations,
        max_size=size,
        snapshot_every=args.snapshot_every,
        seed=1,
        precision=resolve_precision("auto"),
    )


def one_bare(size: int, args: argparse.Namespace) -> dict[str, float]:
    from stylequeue.worker import engine

    params = run_params(size, args)
    clock = LoopClock()
    with clocked(clock):
        result = engine.transfer(
            content_image(size, size), [style_image(size)], params, weights="random"
        )
    return {
        "per_it": per_iteration(result.history),
        "host_us": clock.host_us(),
        "host_us_median": clock.host_us_median(),
    }


def one_job(settings: Settings, size: int, args: argparse.Namespace) -> dict[str, Any]:
    from stylequeue.worker import runner

    params = run_params(size, args)
    job = make_job(settings, params=params, content=content_image(size, size),
                   styles=[style_image(size)])  # fmt: skip
    clock = LoopClock()
    watcher = StreamWatcher(settings.redis_url, job.id)
    try:
        with clocked(clock):
            outcome = runner.execute(job.id, settings, worker_name="bench/in-process")
        time.sleep(0.3)  # the watcher's last read
    finally:
        watcher.close()
    if outcome.status != "succeeded":
        raise RuntimeError(f"bench job ended {outcome.status}: {outcome.error}")
    history = json.loads(get_storage(settings).get(get_job(settings, job.id).history_key))
    entries = history["entries"]
    if len(clock.step_ends) != params.iterations:
        raise RuntimeError(f"{len(clock.step_ends)} steps ran for {params.iterations} iterations")
    if watcher.order != list(range(1, params.iterations + 1)):
        raise RuntimeError(f"the stream was not 1..{params.iterations} once in order")
    loop = entries[-1]["elapsed"]
    return {
        "per_it": per_iteration(entries),
        "host_us": clock.host_us(),
        "host_us_median": clock.host_us_median(),
        "share": clock.callbacks / loop,
        "visible": [watcher.seen[k] - clock.step_ends[k - 1] for k in sorted(clock.ended)],
    }


def one_cancel(settings: Settings, size: int, args: argparse.Namespace) -> dict[str, float]:
    """Set the Redis cancel flag (as the web does) mid-run; how long until the loop stops."""
    from stylequeue.shared.progress import ProgressStream
    from stylequeue.worker import runner

    params = run_params(size, args, iterations=10 * args.iterations)
    job = make_job(settings, params=params, content=content_image(size, size),
                   styles=[style_image(size)])  # fmt: skip
    clock = LoopClock()
    client = redis.Redis.from_url(settings.redis_url)
    flagged: dict[str, float] = {}

    def cancel_later() -> None:
        while len(clock.ended) < args.iterations // 2:
            time.sleep(0.01)
        time.sleep(0.037)  # somewhere inside an iteration, not at its edge
        flagged["at"] = time.monotonic()
        ProgressStream(client).request_cancel(job.id)

    thread = threading.Thread(target=cancel_later, daemon=True)
    thread.start()
    with clocked(clock):
        outcome = runner.execute(job.id, settings, worker_name="bench/in-process")
    thread.join(5)
    client.close()
    if outcome.status != "canceled" or clock.stopped_at is None:
        raise RuntimeError(f"bench cancel ended {outcome.status}")
    steps = [b - a for a, b in zip(clock.starts, clock.ends, strict=True)]
    return {"latency": clock.stopped_at - flagged["at"], "step": statistics.median(steps)}


def measure_overhead(settings: Settings, args: argparse.Namespace) -> dict[str, Any]:
    from stylequeue.worker import engine

    engine.warm_up("random", run_params(32, args))
    out: dict[str, Any] = {}
    for size in args.sizes:
        bare, jobs = [], []
        for _ in range(args.repeats):  # alternating, so drifts in the machine's load hit both
            bare.append(one_bare(size, args))
            jobs.append(one_job(settings, size, args))
        out[size] = {"bare": bare, "jobs": jobs}
    out["cancel"] = [one_cancel(settings, args.sizes[-1], args) for _ in range(args.repeats)]
    return out


# ---- report -----------------------------------------------------------------------------------


def _med(runs: list[dict[str, Any]], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def _range(runs: list[dict[str, Any]], key: str, fmt: str) -> str:
    values = [r[key] for r in runs]
    return f"{min(values):{fmt}}-{max(values):{fmt}}"


def report(lat: dict[str, Any], ovh: dict[str, Any], args: argparse.Namespace) -> str:
    rows = lat["rows"]
    med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
    mx = {k: max(r[k] for r in rows) for k in rows[0]}
    cpu = f"{os.cpu_count()} CPU cores"
    load = os.getloadavg()
    lines = [
        "# Queue benchmark (bench/queue_latency.py)",
        "",
        f"Machine: {platform.machine()}, {cpu}, Python {platform.python_version()}, "
        f"{platform.system()}; TensorFlow CPU, random VGG19 weights; load average at the end "
        f"{load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}. "
        f"Run: `python bench/queue_latency.py --jobs {args.jobs} --size {args.size} "
        f"--sizes {','.join(map(str, args.sizes))} --iterations {args.iterations} "
        f"--snapshot-every {args.snapshot_every} --repeats {args.repeats}`.",
        "",
        f"## Submit to first progress entry (warm worker, {args.size} px, {len(rows)} jobs)",
        "",
        "| stage (seconds from submit) | median | max |",
        "|---|---:|---:|",
        f"| inputs stored, row committed, task sent | {med['submit']:.3f} | {mx['submit']:.3f} |",
        f"| row marked running by the worker | {med['running']:.3f} | {mx['running']:.3f} |",
        f"| **first progress entry in Redis** | **{med['first']:.3f}** | {mx['first']:.3f} |",
        "",
        f"## The loop ({args.iterations} iterations, snapshot every {args.snapshot_every}, "
        f"{args.repeats} alternating runs each; medians, range in brackets)",
        "",
        "| size | variant | s/iteration | host µs/iteration outside the step (mean) "
        "| (median gap) | callbacks' share of the loop |",
        "|---:|---|---:|---:|---:|---:|",
    ]
    for size in args.sizes:
        bare, jobs = ovh[size]["bare"], ovh[size]["jobs"]
        lines += [
            f"| {size} | bare engine | {_med(bare, 'per_it'):.4f} "
            f"| {_med(bare, 'host_us'):.0f} ({_range(bare, 'host_us', '.0f')}) "
            f"| {_med(bare, 'host_us_median'):.0f} | - |",
            f"| {size} | `run_job` attempt | {_med(jobs, 'per_it'):.4f} "
            f"| **{_med(jobs, 'host_us'):.0f}** ({_range(jobs, 'host_us', '.0f')}) "
            f"| {_med(jobs, 'host_us_median'):.0f} "
            f"| **{100 * _med(jobs, 'share'):.2f}%** "
            f"({_range([{'v': 100 * r['share']} for r in jobs], 'v', '.2f')}) |",
        ]
    visible = [v for size in args.sizes for r in ovh[size]["jobs"] for v in r["visible"]]
    visible.sort()
    cancel = ovh["cancel"]
    lines += [
        "",
        f"- iteration end → visible to a reader's blocking XREAD (all {len(visible)} iterations "
        f"above): median {1000 * statistics.median(visible):.1f} ms, "
        f"p95 {1000 * visible[int(0.95 * (len(visible) - 1))]:.1f} ms, "
        f"max {1000 * visible[-1]:.1f} ms",
        f"- cancel flag set → the loop stops ({args.sizes[-1]} px, {len(cancel)} runs): "
        f"median {1000 * _med(cancel, 'latency'):.0f} ms "
        f"({_range([{'v': 1000 * c['latency']} for c in cancel], 'v', '.0f')}), "
        f"a step taking {1000 * _med(cancel, 'step'):.0f} ms",
        "",
        "Per-run host µs/iteration (run_job): "
        + "; ".join(
            f"{size} px " + ", ".join(f"{r['host_us']:.0f}" for r in ovh[size]["jobs"])
            for size in args.sizes
        )
        + ".",
        "",
        "Latency per job (submit / running / first entry, s): "
        + "; ".join(f"{r['submit']:.3f} / {r['running']:.3f} / {r['first']:.3f}" for r in rows)
        + ".",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=10)
    parser.add_argument("--size", type=int, default=64, help="the latency jobs' size")
    parser.add_argument(
        "--sizes", type=lambda v: [int(x) for x in v.split(",")], default=[32, 64],
        help="sizes of the loop measurements, comma-separated",
    )  # fmt: skip
    parser.add_argument("--iterations", type=int, default=100)
    parser.add_argument("--snapshot-every", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, help="also write the report here (markdown)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="sq-bench-") as tmp_name:
        tmp = Path(tmp_name)
        with services.private_redis(tmp / "redis") as (url, _proc):
            settings = bench_settings(tmp, url)
            lat = measure_latency(settings, tmp, args)  # the worker is stopped after this
            ovh = measure_overhead(settings, args)
    text = report(lat, ovh, args)
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
