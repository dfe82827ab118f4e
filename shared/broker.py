"""What is waiting in the Celery broker, read straight off kombu's Redis transport.

kombu's Redis transport keeps a queue's waiting messages in **one list per priority step**:
the bare queue name for step 0 and ``<queue>\\x06\\x16<step>`` for the others (default steps
0, 3, 6, 9; ``broker_transport_options["priority_steps"]`` changes them). A plain ``LLEN
<queue>`` therefore misses every message sent with a priority above 0. Messages a worker has
taken but not acked yet (with ``task_acks_late`` that is every running task, plus any it has
reserved and not started) are in none of those lists: they sit in the ``unacked`` hash
(indexed by time in ``unacked_index``) as ``[message, exchange, routing_key]``.

:func:`broker_layout` reads the key names from the Celery app's configuration and kombu's
own defaults, so the functions here stay right when queues or priority steps are added.
Nothing here changes the broker.
"""

from __future__ import annotations

import base64
import json
from bisect import bisect
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import redis
from celery import Celery
from kombu.transport.redis import PRIORITY_STEPS, Channel

from stylequeue.shared.celery_app import RUN_JOB

MAX_PRIORITY = 9  # kombu's virtual transports clamp a message's priority to 0..9


@dataclass(frozen=True)
class BrokerLayout:
    """Where kombu's Redis transport keeps the app's queues."""

    queues: tuple[str, ...]
    priority_steps: tuple[int, ...]
    sep: str = Channel.sep
    unacked_key: str = Channel.unacked_key
    prefix: str = ""  # kombu's ``global_keyprefix``

    def priority_step(self, priority: int) -> int:
        """The step (list) a message of ``priority`` goes to, as kombu chooses it."""
        steps = self.priority_steps
        return steps[max(bisect(steps, priority) - 1, 0)]

    def list_key(self, queue: str, step: int) -> str:
        """The list holding ``queue``'s waiting messages of priority step ``step``."""
        name = f"{queue}{self.sep}{step}" if step else queue
        return self.prefix + name


def broker_layout(app: Celery) -> BrokerLayout:
    """The queues and priority steps ``app`` is configured with (kombu's defaults else)."""
    conf = app.conf
    options: Mapping[str, Any] = conf.broker_transport_options or {}
    configured = conf.task_queues or ()
    queues = tuple(sorted({str(q.name) for q in configured} | {str(conf.task_default_queue)}))
    steps = tuple(sorted({int(s) for s in options.get("priority_steps", PRIORITY_STEPS)}))
    return BrokerLayout(
        queues=queues,
        priority_steps=steps or (0,),
        sep=str(options.get("sep", Channel.sep)),
        unacked_key=str(options.get("unacked_key", Channel.unacked_key)),
        prefix=str(options.get("global_keyprefix", "")),
    )


def waiting_counts(client: redis.Redis, layout: BrokerLayout) -> dict[tuple[str, int], int]:
    """{(queue, priority step): messages waiting}, every step of every queue (0 included).
    One pipelined round trip of ``LLEN`` per list."""
    pairs = [(queue, step) for queue in layout.queues for step in layout.priority_steps]
    pipe = client.pipeline(transaction=False)
    for queue, step in pairs:
        pipe.llen(layout.list_key(queue, step))
    return {pair: int(n) for pair, n in zip(pairs, pipe.execute(), strict=True)}


@dataclass(frozen=True)
class Unacked:
    """A message a worker has taken and not acked yet."""

    queue: str
    priority_step: int
    task: str | None
    job_id: str | None  # the argument of a ``run_job`` message


def unacked_messages(client: redis.Redis, layout: BrokerLayout) -> list[Unacked]:
    """The app's queues' messages in the ``unacked`` hash (other queues' are left out)."""
    raw_entries: Iterable[bytes | str] = client.hvals(layout.prefix + layout.unacked_key)
    found = []
    for raw in raw_entries:
        entry = _unacked_entry(raw, layout)
        if entry is not None:
            found.append(entry)
    return found


def _unacked_entry(raw: bytes | str, layout: BrokerLayout) -> Unacked | None:
    try:
        message, exchange, routing_key = json.loads(raw)
    except (ValueError, TypeError):
        return None
    # Celery routes to a queue through a direct exchange of the same name and that name as
    # the routing key; either names the queue.
    queue = next((q for q in (routing_key, exchange) if q in layout.queues), None)
    if queue is None or not isinstance(message, dict):
        return None
    try:
        priority = int(message.get("properties", {}).get("priority") or 0)
    except (TypeError, ValueError, AttributeError):
        priority = 0
    priority = max(min(priority, MAX_PRIORITY), 0)  # kombu clamps it so too
    headers = message.get("headers")
    task = headers.get("task") if isinstance(headers, dict) else None
    return Unacked(
        queue=queue,
        priority_step=layout.priority_step(priority),
        task=task if isinstance(task, str) else None,
        job_id=run_job_id(message),
    )


def run_job_id(message: Mapping[str, Any]) -> str | None:
    """The job id of a Celery (protocol 2) ``run_job`` message envelope, else None."""
    try:
        if message.get("headers", {}).get("task") != RUN_JOB:
            return None
        body = message["body"]
        if message.get("properties", {}).get("body_encoding") == "base64":
            body = base64.b64decode(body)
        args: Sequence[Any] = json.loads(body)[0]
        return str(args[0]) if args else None
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        return None
