"""The job JSON (``web/job_json.py``) as JSON Schema: its part of the OpenAPI document.

Kept beside the function that makes the JSON, one entry per key. The schema is closed
(``additionalProperties: false``, every key required): a key added to ``job_json`` without
its entry here makes every API test that reads a job fail (their responses are validated
against the document: ``tests/web/openapi_client.py``), so the contract cannot fall behind.
"""

from __future__ import annotations

from typing import Any

from stylequeue.shared.params import WEBHOOK_EVENTS
from stylequeue.shared.states import TERMINAL, JobStatus
from stylequeue.web.param_schema import stored_params_schema
from stylequeue.web.webhook_json import DELIVERIES_SHOWN

INT = {"type": "integer", "minimum": 0}
INT_OR_NULL = {"type": ["integer", "null"], "minimum": 0}
NUMBER_OR_NULL = {"type": ["number", "null"]}
TIME = {"type": "string", "format": "date-time"}
TIME_OR_NULL = {"type": ["string", "null"], "format": "date-time"}
STRING_OR_NULL = {"type": ["string", "null"]}
URL = {"type": "string", "format": "uri-reference"}

LINKS = (
    "self", "progress", "result", "download", "snapshots", "cancel", "dashboard", "content",
    "thumbnail",
)  # fmt: skip


def _doc(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {**schema, "description": description}


WEBHOOK_DELIVERY: dict[str, Any] = {  # web/webhook_json.py: delivery_json
    "type": "object",
    "required": [
        "time", "event", "webhook_id", "attempt", "status_code", "error", "next_attempt_at",
    ],
    "properties": {
        "time": _doc(TIME, "when the attempt was made"),
        "event": {"enum": list(WEBHOOK_EVENTS)},
        "webhook_id": _doc({"type": "string"}, "the webhook-id header (the same on retries)"),
        "attempt": {"type": "integer", "minimum": 1},
        "status_code": _doc(INT_OR_NULL, "the receiver's answer (null: no HTTP answer)"),
        "error": _doc(STRING_OR_NULL, "why the attempt failed, when it did"),
        "next_attempt_at": _doc(TIME_OR_NULL, "null: delivered, or no more attempts"),
    },
    "additionalProperties": False,
}  # fmt: skip

JOB_PROPERTIES: dict[str, dict[str, Any]] = {
    "id": {"type": "string", "format": "uuid"},
    "status": _doc(
        {"enum": [s.value for s in JobStatus]},
        "ended: " + ", ".join(sorted(s.value for s in TERMINAL)),
    ),
    "terminal": _doc({"type": "boolean"}, "the job has ended (read this, not a status list)"),
    "params": stored_params_schema(),
    "preset": STRING_OR_NULL,
    "weights": _doc(STRING_OR_NULL, "the weights that made the result"),
    "iterations_done": INT,
    "iterations_total": INT,
    "resumed_from": _doc(INT_OR_NULL, "the checkpoint's iteration this attempt went on from"),
    "iterations_computed": _doc(INT, "every iteration run, across attempts"),
    "best_loss": _doc(NUMBER_OR_NULL, "null also when not finite"),
    "best_iteration": INT_OR_NULL,
    "result_available": {"type": "boolean"},
    "error": _doc(STRING_OR_NULL, "one line, when the job failed"),
    "cancel_requested": {"type": "boolean"},
    "attempts": INT,
    "preemptions": _doc(INT, "attempts ended by a worker's clean shutdown"),
    "resumes_at": _doc(INT_OR_NULL, "queued after some progress: the next iteration"),
    "worker": STRING_OR_NULL,
    "width": INT_OR_NULL,
    "height": INT_OR_NULL,
    "n_styles": INT,
    "snapshots": _doc({"type": "array", "items": INT}, "iterations with a snapshot"),
    "created_at": TIME,
    "enqueued_at": TIME_OR_NULL,
    "started_at": TIME_OR_NULL,
    "finished_at": TIME_OR_NULL,
    "expires_at": _doc(
        TIME_OR_NULL,
        "when retention deletes the finished job (null: active, or kept forever)",
    ),
    "duration_seconds": _doc(NUMBER_OR_NULL, "started to finished (or now)"),
    "webhook": _doc(STRING_OR_NULL, "the URL told of the job's events (null: none)"),
    "webhook_events": _doc(
        {"type": "array", "items": {"enum": list(WEBHOOK_EVENTS)}, "uniqueItems": True},
        "the events sent to the webhook (empty without one)",
    ),
    "webhook_deliveries": _doc(
        {"type": "array", "items": WEBHOOK_DELIVERY, "maxItems": DELIVERIES_SHOWN},
        f"the last {DELIVERIES_SHOWN} delivery attempts, oldest first",
    ),
    "links": {
        "type": "object",
        "required": [*LINKS, "styles"],
        "properties": {
            **{name: URL for name in LINKS},
            "styles": {"type": "array", "items": URL},
        },
        "additionalProperties": False,
    },
}

JOB_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": list(JOB_PROPERTIES),
    "properties": JOB_PROPERTIES,
    "additionalProperties": False,
}
