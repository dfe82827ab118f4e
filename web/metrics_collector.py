"""The fleet's numbers for Prometheus, computed at scrape time from what the service keeps.

One scrape target for the whole fleet: every figure is read, when Prometheus asks, from the
database (jobs), the broker (kombu's Redis lists, :mod:`stylequeue.shared.broker`) and the
fleet registry (:mod:`stylequeue.shared.fleet`). Nothing is counted in the web process, so
gunicorn's processes need no shared directory and any of them answers the same.

:class:`FleetCollector` is a ``prometheus_client`` custom collector; the view
(:mod:`stylequeue.web.metrics`) registers it on a private ``CollectorRegistry`` per scrape.
A source that cannot be read (database or Redis down) drops its own families only, and
``stylequeue_metrics_source_up{source}`` says which.
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import redis
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from sqlalchemy import case, func, or_, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from stylequeue.shared.broker import BrokerLayout, Unacked, unacked_messages, waiting_counts
from stylequeue.shared.deletion import RemovalReason
from stylequeue.shared.fleet import list_workers
from stylequeue.shared.models import Job, JobDeletion, RemovedJobTotals
from stylequeue.shared.redis_keys import stream_key
from stylequeue.shared.states import JobStatus, utcnow

log = logging.getLogger(__name__)

PREFIX = "stylequeue_"
# The histograms cover jobs that started (queue wait) or finished (run time) this recently:
# they are recomputed from rows at each scrape, not accumulated, so read their buckets as
# they are (histogram_quantile over the buckets), never through rate().
HISTOGRAM_WINDOW = timedelta(hours=1)
QUEUE_WAIT_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400)
RUN_TIME_BUCKETS = (10, 30, 60, 120, 300, 600, 1200, 1800, 2700, 3600, 7200)
ENDED_WITH_RUN = (JobStatus.SUCCEEDED.value, JobStatus.FAILED.value, JobStatus.CANCELED.value)
# A running job's rate is read from the last entries of its progress stream (one per
# iteration, ids in Redis's milliseconds); no entry for this long means it is stalled (0).
RATE_ENTRIES = 20
STALLED_SECONDS = 60.0


# ---- what the database says -----------------------------------------------------------------


@dataclass
class RunningJob:
    id: str
    worker: str | None
    iterations_done: int
    started_at: datetime | None


@dataclass
class JobFigures:
    now: datetime
    by_status: dict[str, int] = field(default_factory=dict)
    oldest_queued: datetime | None = None
    queue_waits: list[float] = field(default_factory=list)
    run_times: dict[str, list[float]] = field(default_factory=dict)
    running: list[RunningJob] = field(default_factory=list)
    attempts: int = 0
    crashes: int = 0
    preemptions: int = 0
    checkpoints: int = 0
    resumes: int = 0
    removed: dict[str, int] = field(default_factory=dict)  # reason -> jobs removed so far
    purges_pending: int = 0  # removed jobs whose files or stream may still be there


def read_job_figures(session: Session, now: datetime) -> JobFigures:
    """Everything the job metrics need, in one session."""
    figures = JobFigures(now=now)
    figures.by_status = {
        str(status): int(n)
        for status, n in session.execute(select(Job.status, func.count()).group_by(Job.status))
    }
    figures.oldest_queued = session.scalar(
        select(Job.created_at)
        .where(Job.status == JobStatus.QUEUED.value)
        .order_by(Job.created_at)
        .limit(1)
    )
    cutoff = now - HISTOGRAM_WINDOW
    recent = session.execute(
        select(Job.status, Job.created_at, Job.started_at, Job.finished_at).where(
            Job.started_at.is_not(None),
            or_(Job.started_at >= cutoff, Job.finished_at >= cutoff),
        )
    )
    run_times: dict[str, list[float]] = defaultdict(list)
    for status, created, started, finished in recent:
        if started is None:
            continue
        if started >= cutoff:
            figures.queue_waits.append(max((started - created).total_seconds(), 0.0))
        if status in ENDED_WITH_RUN and finished is not None and finished >= cutoff:
            run_times[status].append(max((finished - started).total_seconds(), 0.0))
    figures.run_times = dict(run_times)
    running = session.execute(
        select(Job.id, Job.worker, Job.iterations_done, Job.started_at).where(
            Job.status == JobStatus.RUNNING.value
        )
    )
    figures.running = [
        RunningJob(job_id, worker, done, started) for job_id, worker, done, started in running
    ]
    # Each attempt after the first followed either a preemption (the job was handed back) or a
    # crash (its runner was lost): the ones the preemptions do not explain are crashes.
    lost = Job.attempts - 1 - Job.preemptions
    crashed = case((lost > 0, lost), else_=0)
    sums = session.execute(
        select(
            func.coalesce(func.sum(Job.attempts), 0),
            func.coalesce(func.sum(crashed), 0),
            func.coalesce(func.sum(Job.preemptions), 0),
            func.coalesce(func.sum(Job.checkpoints), 0),
            func.coalesce(func.sum(Job.resumes), 0),
        )
    ).one()
    (
        figures.attempts, figures.crashes, figures.preemptions,
        figures.checkpoints, figures.resumes,
    ) = (int(n) for n in sums)  # fmt: skip
    _add_removed(session, figures)
    return figures


def _add_removed(session: Session, figures: JobFigures) -> None:
    """Removed jobs (deleted or expired, shared/deletion.py): how many, and what they had
    added to the counters summed over the rows, so those do not go back when rows go."""
    for totals in session.scalars(select(RemovedJobTotals)):
        figures.removed[totals.reason] = totals.jobs
        figures.attempts += totals.attempts
        figures.crashes += totals.crashes
        figures.preemptions += totals.preemptions
        figures.checkpoints += totals.checkpoints
        figures.resumes += totals.resumes
    figures.purges_pending = session.scalar(select(func.count()).select_from(JobDeletion)) or 0


# ---- the collector --------------------------------------------------------------------------


@dataclass
class _Scrape:
    """One scrape's readings; a source that failed leaves its part None."""

    jobs: JobFigures | None = None
    waiting: dict[tuple[str, int], int] | None = None
    unacked: list[Unacked] | None = None
    workers: list[dict[str, Any]] | None = None
    rates: dict[str, float] | None = None  # job id -> iterations/s from its stream
    up: dict[str, bool] = field(default_factory=dict)


class FleetCollector(Collector):
    """Yields the stylequeue families, read from the database and Redis at each scrape."""

    def __init__(
        self,
        sessions: Callable[[], Session],
        client: redis.Redis,
        layout: BrokerLayout,
        now: Callable[[], datetime] = utcnow,
    ) -> None:
        self.sessions = sessions
        self.redis = client
        self.layout = layout
        self.now = now

    def collect(self) -> Iterator[Metric]:
        scrape = self._read()
        if scrape.jobs is not None:
            yield from job_families(scrape.jobs)
        if scrape.waiting is not None and scrape.unacked is not None:
            running = None if scrape.jobs is None else {j.id for j in scrape.jobs.running}
            yield from queue_families(self.layout, scrape.waiting, scrape.unacked, running)
        if scrape.workers is not None:
            yield from worker_families(scrape.workers, scrape.jobs, scrape.rates)
        up = GaugeMetricFamily(
            PREFIX + "metrics_source_up",
            "1 when this scrape could read the source (database, broker, fleet registry); "
            "0 when it could not, and that source's metrics are missing from this scrape",
            labels=["source"],
        )
        for source, ok in scrape.up.items():
            up.add_metric([source], 1.0 if ok else 0.0)
        yield up

    def _read(self) -> _Scrape:
        scrape = _Scrape()
        try:
            with self.sessions() as session:
                scrape.jobs = read_job_figures(session, self.now())
            scrape.up["database"] = True
        except SQLAlchemyError as exc:
            log.warning("metrics: the database cannot be read: %s", exc)
            scrape.up["database"] = False
        unreachable = False
        try:
            scrape.waiting = waiting_counts(self.redis, self.layout)
            scrape.unacked = unacked_messages(self.redis, self.layout)
            scrape.up["broker"] = True
        except redis.RedisError as exc:
            log.warning("metrics: the broker cannot be read: %s", exc)
            scrape.up["broker"] = False
            # Not again in this scrape: each try may wait out timeouts and retries, and the
            # scrape must answer within Prometheus's timeout with the database's figures.
            unreachable = isinstance(exc, redis.ConnectionError | redis.TimeoutError)
        try:
            if unreachable:
                raise redis.ConnectionError("Redis unreachable for the broker figures")
            scrape.workers = list_workers(self.redis)
            scrape.up["fleet"] = True
        except (redis.RedisError, ValueError) as exc:
            log.warning("metrics: the fleet registry cannot be read: %s", exc)
            scrape.up["fleet"] = False
        if scrape.jobs is not None and scrape.up["fleet"]:
            try:
                scrape.rates = stream_rates(self.redis, [j.id for j in scrape.jobs.running])
            except (redis.RedisError, ValueError, TypeError) as exc:  # rows' averages then
                log.warning("metrics: progress streams cannot be read: %s", exc)
        return scrape


def stream_rates(client: redis.Redis, job_ids: Sequence[str]) -> dict[str, float]:
    """{job id: iterations per second over its stream's last :data:`RATE_ENTRIES`
    entries}; 0 for a stream silent for :data:`STALLED_SECONDS` (by Redis's clock, the one
    its ids use); no answer for a job with fewer than two entries."""
    if not job_ids:
        return {}
    pipe = client.pipeline(transaction=False)
    pipe.time()
    for job_id in job_ids:
        pipe.xrevrange(stream_key(job_id), count=RATE_ENTRIES)
    (seconds, micros), *streams = pipe.execute()
    now_ms = int(seconds) * 1000 + int(micros) // 1000
    rates: dict[str, float] = {}
    for job_id, entries in zip(job_ids, streams, strict=True):
        if len(entries) < 2:
            continue
        (newest_ms, newest_it), (oldest_ms, oldest_it) = (
            _point(e) for e in (entries[0], entries[-1])
        )
        if now_ms - newest_ms > STALLED_SECONDS * 1000:
            rates[job_id] = 0.0
        elif newest_ms > oldest_ms:
            rates[job_id] = max(newest_it - oldest_it, 0) * 1000 / (newest_ms - oldest_ms)
    return rates


def _point(entry: tuple[bytes | str, dict[bytes | str, bytes | str]]) -> tuple[int, int]:
    """(milliseconds, iteration) of one stream entry."""
    stream_id, fields = entry
    sid = stream_id.decode() if isinstance(stream_id, bytes) else stream_id
    raw = fields.get(b"iteration", fields.get("iteration", b"0"))
    return int(sid.split("-", 1)[0]), int(raw)


# ---- families -------------------------------------------------------------------------------


def job_families(figures: JobFigures) -> Iterator[Metric]:
    jobs = GaugeMetricFamily(
        PREFIX + "jobs", "Jobs in the database by status, now", labels=["status"]
    )
    for status in JobStatus:
        jobs.add_metric([status.value], float(figures.by_status.get(status.value, 0)))
    yield jobs

    age = 0.0
    if figures.oldest_queued is not None:
        age = max((figures.now - figures.oldest_queued).total_seconds(), 0.0)
    yield GaugeMetricFamily(
        PREFIX + "oldest_queued_job_age_seconds",
        "Seconds since the oldest queued job was submitted (0 when none is queued); a job "
        "put back on the queue after losing its runner counts from its submission",
        value=age,
    )

    window = int(HISTOGRAM_WINDOW.total_seconds())
    wait = HistogramMetricFamily(
        PREFIX + "job_queue_wait_seconds",
        f"Seconds from submission to the start of the latest attempt, over jobs that started "
        f"in the last {window} s (recomputed from rows at each scrape: use the buckets as "
        f"they are, not rate())",
    )
    wait.add_metric([], *_buckets(figures.queue_waits, QUEUE_WAIT_BUCKETS))
    yield wait

    run = HistogramMetricFamily(
        PREFIX + "job_run_seconds",
        f"Seconds from the start of the latest attempt to the end, over jobs that ended in "
        f"the last {window} s, by final status (recomputed from rows at each scrape: use "
        f"the buckets as they are, not rate())",
        labels=["status"],
    )
    for ended in ENDED_WITH_RUN:
        run.add_metric([ended], *_buckets(figures.run_times.get(ended, []), RUN_TIME_BUCKETS))
    yield run

    yield from _event_counters(figures)


def _buckets(
    values: Sequence[float], bounds: Sequence[float]
) -> tuple[list[tuple[str, float]], float]:
    """Cumulative ``(le, count)`` pairs ending with +Inf, and the sum of ``values``."""
    pairs = [(str(float(b)), float(sum(1 for v in values if v <= b))) for b in bounds]
    pairs.append(("+Inf", float(len(values))))
    return pairs, float(sum(values))


def _event_counters(figures: JobFigures) -> Iterator[Metric]:
    yield CounterMetricFamily(
        PREFIX + "job_attempts",
        "Attempts started, summed over the jobs in the database (the jobs' attempts column) "
        "and the jobs removed from it",
        value=figures.attempts,
    )
    yield CounterMetricFamily(
        PREFIX + "job_crashes",
        "Attempts that ended without their runner finishing them (the runner died or was "
        "lost and the job was restarted): attempts beyond the first that no preemption "
        "explains, summed over the jobs in the database and the jobs removed from it",
        value=figures.crashes,
    )
    yield CounterMetricFamily(
        PREFIX + "job_preemptions",
        "Attempts handed back by a worker told to stop (SIGTERM): checkpointed and queued "
        "again, summed over the jobs in the database (the jobs' preemptions column) and the "
        "jobs removed from it",
        value=figures.preemptions,
    )
    removed = CounterMetricFamily(
        PREFIX + "jobs_removed",
        "Jobs removed from the database: deleted by their owner, or expired "
        "(STYLEQUEUE_RETENTION_DAYS after they ended)",
        labels=["reason"],
    )
    for reason in RemovalReason:
        removed.add_metric([reason.value], float(figures.removed.get(reason.value, 0)))
    yield removed
    yield GaugeMetricFamily(
        PREFIX + "job_purges_pending",
        "Removed jobs whose files or progress stream may still be there: purged within a "
        "second or two normally; one that stays up means storage or Redis keeps failing "
        "(the sweeper retries every pass)",
        value=figures.purges_pending,
    )
    yield CounterMetricFamily(
        PREFIX + "job_checkpoints",
        "Checkpoints saved by running jobs, summed over the jobs in the database (the jobs' "
        "checkpoints column) and the jobs removed from it",
        value=figures.checkpoints,
    )
    yield CounterMetricFamily(
        PREFIX + "job_resumes",
        "Attempts that resumed from a checkpoint instead of iteration 1, summed over the jobs "
        "in the database (the jobs' resumes column) and the jobs removed from it",
        value=figures.resumes,
    )


def queue_families(
    layout: BrokerLayout,
    waiting: dict[tuple[str, int], int],
    unacked: list[Unacked],
    running_job_ids: set[str] | None,
) -> Iterator[Metric]:
    labels = ["queue", "priority"]
    depth = GaugeMetricFamily(
        PREFIX + "queue_messages",
        "Messages waiting in the broker, by queue and priority step (kombu's Redis "
        "transport keeps one list per step; 0 is the highest priority)",
        labels=labels,
    )
    for (queue, step), n in sorted(waiting.items()):
        depth.add_metric([queue, str(step)], float(n))
    yield depth

    taken: Counter[tuple[str, int]] = Counter()
    reserved: Counter[tuple[str, int]] = Counter()
    for message in unacked:
        key = (message.queue, message.priority_step)
        taken[key] += 1
        if running_job_ids is not None and message.job_id not in running_job_ids:
            reserved[key] += 1
    unacked_family = GaugeMetricFamily(
        PREFIX + "queue_unacked_messages",
        "Messages a worker has taken and not acked yet (acks are late: running jobs "
        "included), by queue and priority step",
        labels=labels,
    )
    reserved_family = GaugeMetricFamily(
        PREFIX + "queue_reserved_messages",
        "Messages a worker has taken whose job is not running: reserved, not started (a "
        "message that is no job counts too; absent when the database cannot be read)",
        labels=labels,
    )
    for queue in layout.queues:
        for step in layout.priority_steps:
            unacked_family.add_metric([queue, str(step)], float(taken[(queue, step)]))
            reserved_family.add_metric([queue, str(step)], float(reserved[(queue, step)]))
    yield unacked_family
    if running_job_ids is None:
        return
    yield reserved_family
    total = GaugeMetricFamily(
        PREFIX + "queue_depth",
        "Jobs' messages not started yet: waiting in the broker plus reserved by a worker "
        "and not started, by queue and priority step",
        labels=labels,
    )
    for queue in layout.queues:
        for step in layout.priority_steps:
            key = (queue, step)
            total.add_metric([queue, str(step)], float(waiting.get(key, 0) + reserved[key]))
    yield total


def worker_families(
    workers: list[dict[str, Any]],
    jobs: JobFigures | None,
    current_rates: dict[str, float] | None = None,
) -> Iterator[Metric]:
    """Workers by weights, precision and state, and each worker's iteration rate.

    A worker is ``busy`` when a running job's row names it (``<node>/<pid>``, the runner's
    worker name); ``unknown`` when the database cannot be read.
    """
    busy_names: set[str] = set()
    if jobs is not None:
        busy_names = {j.worker for j in jobs.running if j.worker}
    states: Counter[tuple[str, str, str]] = Counter()
    for entry in workers:
        name = f"{entry.get('name')}/{entry.get('pid')}"
        state = "unknown" if jobs is None else ("busy" if name in busy_names else "idle")
        weights = str(entry.get("weights") or "unknown")
        precision = str(entry.get("precision") or "unknown")
        states[(weights, precision, state)] += 1
    family = GaugeMetricFamily(
        PREFIX + "workers",
        "Live workers (fleet registry) by weights, precision and state (busy: a running job "
        "names it)",
        labels=["weights", "precision", "state"],
    )
    for (weights, precision, state), n in sorted(states.items()):
        family.add_metric([weights, precision, state], float(n))
    yield family
    yield GaugeMetricFamily(
        PREFIX + "workers_online",
        "Live workers in the fleet registry (0 when none announced itself lately)",
        value=float(len(workers)),
    )
    if jobs is None:
        return
    rates: dict[str, float] = defaultdict(float)
    for job in jobs.running:
        if not job.worker or job.started_at is None:
            continue
        if current_rates is not None and job.id in current_rates:
            rates[job.worker] += current_rates[job.id]
        else:
            elapsed = max((jobs.now - job.started_at).total_seconds(), 1.0)
            rates[job.worker] += job.iterations_done / elapsed
    ips = GaugeMetricFamily(
        PREFIX + "worker_iterations_per_second",
        f"Iterations per second of the job each worker runs: over its progress stream's "
        f"last {RATE_ENTRIES} entries (0 when silent for {STALLED_SECONDS:.0f} s), else "
        f"averaged since its attempt started (the row's iterations_done)",
        labels=["worker"],
    )
    for worker, rate in sorted(rates.items()):
        ips.add_metric([worker], rate)
    yield ips
