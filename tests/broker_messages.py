"""Celery messages read straight off kombu's Redis transport, without the service's code.

The sweeper parses the broker's lists itself (``shared.sweeper._job_id_of``); tests decode
them here, from the protocol's description, so a bug in that parser cannot hide behind it.
Celery message protocol v2 on kombu's Redis transport: each waiting message is a JSON
envelope pushed (LPUSH) onto a list named after the queue; its ``headers`` carry ``task``
and ``id``; its ``body`` (base64 when ``properties.body_encoding`` says so) is the JSON
``[args, kwargs, embed]``. A message sent with a priority goes to the list of its priority
step instead: ``<queue>\x06\x16<step>`` (steps 0, 3, 6, 9 as the app configures them; step 0
is the bare queue name); ``properties.priority`` carries the number sent. Workers ``BRPOP``
the lists lowest step first.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

import redis

RUN_JOB_TASK = "stylequeue.run_job"
PRIORITY_STEPS = (0, 3, 6, 9)
SEP = "\x06\x16"
SWEEP_TASK = "stylequeue.sweep_queued"


@dataclass(frozen=True)
class Message:
    task: str
    id: str
    args: list[Any]
    kwargs: dict[str, Any]
    embed: dict[str, Any]
    headers: dict[str, Any]
    properties: dict[str, Any]
    step: int = 0  # the priority list it waits in


def list_name(queue: str, step: int) -> str:
    return f"{queue}{SEP}{step}" if step else queue


def decode(raw: bytes | str, step: int = 0) -> Message:
    envelope = json.loads(raw)
    assert envelope["content-type"] == "application/json", envelope
    properties = envelope["properties"]
    body = envelope["body"]
    if properties.get("body_encoding") == "base64":
        body = base64.b64decode(body)
    args, kwargs, embed = json.loads(body)
    headers = envelope["headers"]
    assert isinstance(headers["task"], str) and headers["task"], headers
    assert isinstance(headers["id"], str) and headers["id"] == properties["correlation_id"]
    return Message(headers["task"], headers["id"], args, kwargs, embed, headers, properties, step)


def waiting(client: redis.Redis, queue: str = "style") -> list[Message]:
    """The messages waiting in ``queue``, in the order a worker takes them: lowest priority
    step first, oldest first within a step (consumers BRPOP the list's tail)."""
    return [
        decode(raw, step)
        for step in PRIORITY_STEPS
        for raw in reversed(client.lrange(list_name(queue, step), 0, -1))
    ]


def run_job_ids(client: redis.Redis, queue: str = "style") -> list[str]:
    """Job ids of the waiting ``run_job`` messages, with repeats (to catch duplicates); each
    message must be exactly ``run_job(job_id)``, the call the worker's task takes."""
    ids = []
    for message in waiting(client, queue):
        if message.task != RUN_JOB_TASK:
            continue
        call = (message.task, message.args, message.kwargs)
        assert len(message.args) == 1 and isinstance(message.args[0], str), call
        assert message.kwargs == {}, call
        ids.append(message.args[0])
    return ids
