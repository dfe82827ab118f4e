"""What the OpenAPI document says about each ``/api/v1`` view, keyed by its endpoint name.

One entry per view (``api.create_job`` ...): a summary, its query and header parameters,
its request body and its own responses, as OpenAPI Operation Objects. The builder
(``web/openapi.py``) adds what it can work out from the app itself: the path and its
parameters (from the URL rule), the operation id, the security (from ``web/auth.py``:
public, operators only, or a job owner's, with CSRF on writes) and the responses every view
shares (401 for a bad token, 403 for a missing CSRF token on a write, 404 for an unknown id,
503 for a backing service).

Every range here comes from the constant the view checks against (paging bounds, thumbnail
sizes, the progress page size); the job parameters come from the parameter table
(``web/param_schema.py``), the job JSON's schema from ``web/job_schema.py``, the error
body's from ``web/errors.py``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from stylequeue.shared.fleet_status import WORKER_FIELDS
from stylequeue.shared.idempotency import KEY_TTL
from stylequeue.shared.jobs import DEFAULT_PER_PAGE, MAX_PAGE, MAX_PER_PAGE
from stylequeue.shared.params import PRESET_NAMES, PUBLIC_PARAMETERS
from stylequeue.shared.progress import FIELDS as PROGRESS_FIELDS
from stylequeue.shared.progress import STREAM_ID_RE
from stylequeue.shared.settings import WEBHOOK_SECRET_PREFIX, Limits
from stylequeue.shared.text import FALSE_WORDS, TRUE_WORDS
from stylequeue.web.idempotency import KEY_HEADER, KEY_MAX_LENGTH, KEY_PATTERN, REPLAYED_HEADER
from stylequeue.web.media import THUMB_SIZES
from stylequeue.web.param_schema import submission_encoding
from stylequeue.web.progress_reader import AFTER_RE, MAX_ENTRIES

Schema = dict[str, Any]


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def json_body(schema: Schema, description: str, **extra: Any) -> Schema:
    return {
        "description": description,
        "content": {"application/json": {"schema": schema}},
        **extra,
    }


def error(description: str, **extra: Any) -> Schema:
    return json_body(ref("Error"), description, **extra)


def header(description: str, schema: Schema | None = None) -> Schema:
    return {"description": description, "schema": schema or {"type": "string"}}


def query(name: str, schema: Schema, description: str, *, empty_is_absent: bool = False) -> Schema:
    """A query parameter; ``empty_is_absent``: ``?name=`` means the default (the view
    reads an empty value as no value)."""
    parameter = {
        "name": name,
        "in": "query",
        "required": False,
        "schema": schema,
        "description": description,
    }
    return {**parameter, "allowEmptyValue": True} if empty_is_absent else parameter


NULLABLE_STRING = {"type": ["string", "null"]}
NULLABLE_INT = {"type": ["integer", "null"]}
NULLABLE_NUMBER = {"type": ["number", "null"]}

# ---- shared pieces ---------------------------------------------------------------------------

RETRY_AFTER = {"Retry-After": header("seconds to wait", {"type": "string", "pattern": r"^\d+$"})}
THUMB = query(
    "thumb",
    {"type": "integer", "enum": list(THUMB_SIZES)},
    "answer a WebP thumbnail at most this many pixels on its longer side instead",
)
IMAGE = {
    "description": "the image: PNG, or WebP with ?thumb (cached: ETag, Cache-Control)",
    "headers": {
        "ETag": header("strong ETag of these bytes"),
        "Cache-Control": header("private; immutable once nothing can change it"),
    },
    "content": {"image/png": {}, "image/webp": {}},  # OpenAPI 3.1: no schema = any bytes
}
INPUT_IMAGE = {
    **IMAGE,
    "description": (
        "the stored input: a JPEG or WebP as it was sent, else lossless WebP (a WebP "
        "thumbnail with ?thumb); cached: ETag, Cache-Control"
    ),
    "content": {"image/jpeg": {}, "image/webp": {}, "image/png": {}},
}
NOT_MODIFIED = {"description": "If-None-Match matched the ETag: nothing sent"}
IMAGE_RESPONSES = {
    "200": IMAGE,
    "304": NOT_MODIFIED,
    "400": error("a bad ?thumb (field: thumb) or ?download (field: download)"),
    "404": error("no such job, or no such image (yet)"),
    "422": error("the stored image is too large to make a thumbnail of"),
}
INPUT_IMAGE_RESPONSES = {**IMAGE_RESPONSES, "200": INPUT_IMAGE}
JOB_LINKS = {
    name: {"operationId": operation, "parameters": {"job_id": "$response.body#/id"}}
    for name, operation in (
        ("GetJob", "get_job"),
        ("GetProgress", "job_progress"),
        ("CancelJob", "cancel_job"),
        ("DeleteJob", "delete_job"),
        ("GetResult", "job_result"),
        ("GetSnapshots", "job_snapshots"),
        ("GetContent", "job_input_content"),
    )
}
JOB_LINKS["GetFirstStyle"] = {
    "operationId": "job_input_style",
    "parameters": {"job_id": "$response.body#/id", "index": "0"},
}

# ---- response bodies other than the job's (components/schemas) ----------------------------------


def _closed(properties: Schema, required: list[str] | None = None) -> Schema:
    return {
        "type": "object",
        "required": list(properties) if required is None else required,
        "properties": properties,
        "additionalProperties": False,
    }


_WORKER_TYPES: dict[str, Schema] = {
    "name": {"type": "string"},
    "pid": NULLABLE_INT,
    "weights_ok": {"type": ["boolean", "null"]},
    "memory": {"type": ["object", "null"]},
    "memory_budget": NULLABLE_INT,  # bytes the worker plans jobs by (worker/budget.py)
}
RUNNING_JOB = _closed(
    {
        "id": {"type": "string", "format": "uuid"},
        "iteration": {"type": "integer"},
        "iterations_total": {"type": "integer"},
        "it_per_s": NULLABLE_NUMBER,
        "started_at": NULLABLE_STRING,
        "attempts": {"type": "integer"},
    }
)

PARAMETER_SPEC = {  # web/config_info.py: parameter_spec
    "type": "object",
    "required": ["type", "default"],
    "properties": {
        "type": {"type": "string"},
        "choices": {"type": "array", "items": {"type": "string"}},
        "min": {"type": "number"},
        "max": {"type": "number"},
        "max_length": {"type": "integer", "description": "a url's, in characters"},
        "note": {"type": "string"},
        "default": {},
    },
    "additionalProperties": False,
}

SCHEMAS: dict[str, Schema] = {
    "Config": _closed(
        {
            "limits": _closed({f.name: {"type": "integer"} for f in dataclasses.fields(Limits)}),
            "formats": {"type": "array", "items": {"type": "string"}},
            "format_names": {"type": "array", "items": {"type": "string"}},
            "presets": {
                "type": "array",
                "items": _closed(
                    {
                        "name": {"enum": list(PRESET_NAMES)},
                        "iterations": {"type": "integer"},
                        "max_size": {"type": "integer"},
                        "snapshot_every": {"type": "integer"},
                        "within_limits": {"type": "boolean"},
                    }
                ),
            },
            "parameters": _closed({name: PARAMETER_SPEC for name in PUBLIC_PARAMETERS}),
            "fleet": _closed(
                {
                    "max_size": {
                        **NULLABLE_INT,
                        "description": "the largest square side a live worker can paint "
                        "(in tiles if need be); null: no worker announces a memory budget",
                    },
                    "max_size_untiled": NULLABLE_INT,
                    "workers": {"type": "integer", "minimum": 0},
                }
            ),
        }
    ),
    "JobList": _closed(
        {
            "jobs": {"type": "array", "items": ref("Job")},
            "page": {"type": "integer", "minimum": 1},
            "per_page": {"type": "integer", "minimum": 1},
            "total": {"type": "integer", "minimum": 0},
            "next": {**NULLABLE_STRING, "description": "the next page's URL"},
            "prev": {**NULLABLE_STRING, "description": "the previous page's URL"},
        }
    ),
    "Progress": _closed(
        {
            "entries": {
                "type": "array",
                "items": _closed(
                    {
                        "id": {"type": "string", "pattern": STREAM_ID_RE},
                        **{
                            name: NULLABLE_INT if name == "iteration" else NULLABLE_NUMBER
                            for name in PROGRESS_FIELDS
                        },
                    }
                ),
            },
            "last_id": {**NULLABLE_STRING, "description": "send it back as ?after="},
            "more": {"type": "boolean", "description": "the page is full: ask again at once"},
            "source": {"enum": ["stream", "history"]},
            "status": {"type": "string"},
            "iterations_done": {"type": "integer"},
            "iterations_total": {"type": "integer"},
            "tiles": {
                "description": "a tiled job's progress within its current iteration; null "
                "when not running in tiles",
                "anyOf": [
                    _closed(
                        {
                            "iteration": {"type": "integer", "minimum": 0},
                            "phase": {"type": "string"},
                            "done": {"type": "integer", "minimum": 0},
                            "total": {"type": "integer", "minimum": 0},
                            "elapsed": {"type": "number"},
                        }
                    ),
                    {"type": "null"},
                ],
            },
        }
    ),
    "Snapshots": _closed(
        {
            "snapshots": {
                "type": "array",
                "items": _closed(
                    {
                        "iteration": {"type": "integer", "minimum": 0},
                        "url": {"type": "string", "format": "uri-reference"},
                        "thumb_url": {"type": "string", "format": "uri-reference"},
                    }
                ),
            }
        }
    ),
    "Session": _closed(
        {
            "owner": {"type": "string", "description": "web:<hex> (cookie) or api:<name> (token)"},
            "auth": {"enum": ["session", "token"]},
            "csrf_token": {**NULLABLE_STRING, "description": "send as X-CSRF-Token on writes"},
        }
    ),
    "Fleet": _closed(
        {
            "online": {"type": "boolean", "description": "at least one worker is registered"},
            "random_weights": {
                "type": "boolean",
                "description": "a worker runs random weights (pictures will not look right)",
            },
            "weights_unavailable": {
                "type": "boolean",
                "description": "a worker cannot load its weights (its jobs will fail)",
            },
        }
    ),
    "WebhookSecret": {
        "anyOf": [
            _closed(
                {
                    "scope": {"const": "owner"},
                    "secret": {
                        "type": "string",
                        "pattern": f"^{WEBHOOK_SECRET_PREFIX}",
                        "description": "verify the webhook-signature header with it",
                    },
                    "created_at": {"type": "string", "format": "date-time"},
                    "previous_expires_at": {
                        "type": ["string", "null"],
                        "format": "date-time",
                        "description": "the rotated-out secret signs too until then",
                    },
                }
            ),
            _closed(
                {
                    "scope": {"const": "deployment"},
                    "secret": {"type": "null"},
                    "created_at": {"type": "null"},
                    "previous_expires_at": {"type": "null"},
                    "note": {"type": "string"},
                }
            ),
        ],
        "description": (
            "the caller's signing secret; where the operator set STYLEQUEUE_WEBHOOK_SECRET, "
            "scope deployment and no secret shown"
        ),
    },
    "AdminFleet": _closed(
        {
            "generated_at": {"type": "string"},
            "workers": {
                "type": "array",
                "items": _closed(
                    {
                        **{
                            name: _WORKER_TYPES.get(name, NULLABLE_STRING) for name in WORKER_FIELDS
                        },
                        "last_seen": NULLABLE_STRING,
                        "seen_seconds_ago": NULLABLE_NUMBER,
                        "job": {"anyOf": [RUNNING_JOB, {"type": "null"}]},
                    }
                ),
            },
            "queue": _closed(
                {
                    "depth": {"type": "integer", "minimum": 0},
                    "oldest_queued_at": NULLABLE_STRING,
                    "oldest_wait_seconds": NULLABLE_NUMBER,
                }
            ),
            "running": {"type": "integer", "minimum": 0},
            "running_without_worker": {"type": "integer", "minimum": 0},
            "last_hour": {"type": "object", "additionalProperties": {"type": "integer"}},
        }
    ),
}

# ---- the operations --------------------------------------------------------------------------

OPERATIONS: dict[str, Schema] = {
    "api.create_job": {
        "summary": "Submit a job",
        "description": (
            "Checks every field and image before anything is stored: a refused request "
            "leaves no row and no file. With an Idempotency-Key, a retry of the same "
            f"request within {KEY_TTL.total_seconds() / 3600:g} h answers the job it made "
            "(200) instead of making another."
        ),
        "tags": ["jobs"],
        "parameters": [
            {
                "name": KEY_HEADER,
                "in": "header",
                "required": False,
                "schema": {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": KEY_MAX_LENGTH,
                    "pattern": KEY_PATTERN,
                },
                "description": (
                    "a key of the client's (a UUID, say), one per job it means to make; "
                    "the same key with other inputs is a 422 naming this header"
                ),
            }
        ],
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": ref("JobSubmission"),
                    "encoding": submission_encoding(),
                }
            },
        },
        "responses": {
            "201": json_body(
                ref("Job"),
                "the job, queued",
                headers={"Location": header("the job's URL")},
                links=JOB_LINKS,
            ),
            "200": json_body(
                ref("Job"),
                "the job an earlier request with this Idempotency-Key made, as it is now",
                headers={
                    "Location": header("the job's URL"),
                    REPLAYED_HEADER: header("true", {"const": "true"}),
                },
                links=JOB_LINKS,
            ),
            "400": error("a missing, repeated or unknown form field (field names it)"),
            "401": error(
                "an unknown or malformed bearer token; or no token where this server takes "
                "jobs from API clients only (STYLEQUEUE_ANONYMOUS=off: token_required)",
                headers={"WWW-Authenticate": header("Bearer")},
            ),
            "403": error(
                "a cookie write without the session's CSRF token; or the owner's stored "
                "images would pass the storage quota (storage_quota_exceeded: delete jobs)"
            ),
            "413": error(
                "the request or an image is too large, or the form has too many parts "
                "(too_many_parts)"
            ),
            "415": error("not multipart/form-data, or a file that is no PNG, JPEG or WebP"),
            "422": error(
                "a parameter or an image is out of range, an image too small to paint at "
                "this size (too_small_to_paint), a webhook this server will not call, or the "
                "Idempotency-Key was used for other inputs (field names it)"
            ),
            "429": error(
                "too many submissions or refused credentials from this address "
                "(rate_limited); or too many jobs queued or running: yours "
                "(too_many_active_jobs), all browser sessions' (anonymous_capacity) or this "
                "address's (address_capacity). Retry-After says when to try again",
                headers=RETRY_AFTER,
            ),
        },
    },
    "api.list_jobs": {
        "summary": "Your jobs, newest first",
        "tags": ["jobs"],
        "parameters": [
            query(
                "page",
                {"type": "integer", "minimum": 1, "maximum": MAX_PAGE, "default": 1},
                "the page, from 1",
                empty_is_absent=True,
            ),
            query(
                "per_page",
                {
                    "type": "integer",
                    "minimum": 1,
                    "maximum": MAX_PER_PAGE,
                    "default": DEFAULT_PER_PAGE,
                },
                "jobs per page",
                empty_is_absent=True,
            ),
        ],
        "responses": {
            "200": json_body(ref("JobList"), "a page of your jobs"),
            "400": error("page or per_page out of range (field names it)"),
        },
    },
    "api.get_job": {
        "summary": "One job",
        "tags": ["jobs"],
        "responses": {"200": json_body(ref("Job"), "the job")},
    },
    "api.job_progress": {
        "summary": "Loss entries after a given one",
        "description": "From the Redis stream while it lives, else from the saved history.",
        "tags": ["jobs"],
        "parameters": [
            query(
                "after",
                {"type": "string", "pattern": AFTER_RE},
                "the last_id of the previous answer",
                empty_is_absent=True,
            ),
            query(
                "limit",
                {"type": "integer", "minimum": 1, "maximum": MAX_ENTRIES, "default": MAX_ENTRIES},
                "entries at most",
                empty_is_absent=True,
            ),
        ],
        "responses": {
            "200": json_body(ref("Progress"), "the entries after ?after"),
            "400": error("a bad after or limit (field names it)"),
        },
    },
    "api.cancel_job": {
        "summary": "Cancel a job",
        "description": (
            "Queued: canceled at once. Running: the worker stops within an iteration and "
            "keeps its best image. Already canceled: 202 again."
        ),
        "tags": ["jobs"],
        "responses": {
            "202": json_body(ref("Job"), "canceled, or the cancel is on its way"),
            "409": error("the job has already succeeded or failed"),
        },
    },
    "api.delete_job": {
        "summary": "Delete a job",
        "description": (
            "The job goes with its images and progress; a queued or running one is "
            "canceled first. From then on every path of the job is a 404."
        ),
        "tags": ["jobs"],
        "responses": {"204": {"description": "deleted"}},
    },
    "api.job_result": {
        "summary": "The best image",
        "tags": ["images"],
        "parameters": [
            THUMB,
            query(
                "download",
                {"type": "string", "enum": [*TRUE_WORDS, *FALSE_WORDS]},
                "send it as an attachment",
                empty_is_absent=True,
            ),
        ],
        "responses": IMAGE_RESPONSES,
    },
    "api.job_snapshots": {
        "summary": "The job's snapshots",
        "tags": ["images"],
        "responses": {"200": json_body(ref("Snapshots"), "iterations with their URLs")},
    },
    "api.job_snapshot": {
        "summary": "One snapshot",
        "tags": ["images"],
        "parameters": [THUMB],
        "responses": IMAGE_RESPONSES,
    },
    "api.job_input_content": {
        "summary": "The stored content image (upright RGB)",
        "tags": ["images"],
        "parameters": [THUMB],
        "responses": INPUT_IMAGE_RESPONSES,
    },
    "api.job_input_style": {
        "summary": "A stored style image (upright RGB), from 0",
        "tags": ["images"],
        "parameters": [THUMB],
        "responses": INPUT_IMAGE_RESPONSES,
    },
    "api.get_session": {
        "summary": "Who am I; the CSRF token a cookie client sends on writes",
        "description": "The one GET that changes state: it creates the browser's owner id.",
        "tags": ["session"],
        "responses": {"200": json_body(ref("Session"), "the caller")},
    },
    "api.get_config": {
        "summary": "Limits, presets and parameter ranges (what the form mirrors)",
        "tags": ["session"],
        "responses": {"200": json_body(ref("Config"), "this server's configuration")},
    },
    "api.get_fleet": {
        "summary": "Live workers and their weights (the pages' banners)",
        "tags": ["fleet"],
        "responses": {"200": json_body(ref("Fleet"), "the workers")},
    },
    "api.admin_fleet": {
        "summary": "The fleet as operators see it",
        "tags": ["fleet"],
        "responses": {
            "200": json_body(
                ref("AdminFleet"),
                "workers, what each runs, the queue, the last hour",
                headers={"Cache-Control": header("no-store")},
            ),
            "403": error("an API token, not an admin token"),
        },
    },
    "webhooks.get_webhook_secret": {
        "summary": "Your webhook signing secret (made on first read)",
        "description": (
            "Like /session, a GET that may write: the first read makes the secret. "
            "Where the operator signs every webhook (STYLEQUEUE_WEBHOOK_SECRET), the "
            "answer says so and shows no secret."
        ),
        "tags": ["webhooks"],
        "responses": {
            "200": json_body(
                ref("WebhookSecret"),
                "the secret",
                headers={"Cache-Control": header("no-store")},
            )
        },
    },
    "webhooks.rotate_webhook_secret": {
        "summary": "Rotate your webhook signing secret",
        "description": "The new secret is answered; the old one still signs beside it for a day.",
        "tags": ["webhooks"],
        "responses": {
            "200": json_body(
                ref("WebhookSecret"),
                "the new secret",
                headers={"Cache-Control": header("no-store")},
            ),
            "409": error(
                "this server signs every webhook with its operator's secret "
                "(deployment_secret): the operator rotates it"
            ),
        },
    },
    "openapi.openapi_json": {
        "summary": "This document",
        "tags": ["session"],
        "responses": {
            "200": json_body(
                {"type": "object", "required": ["openapi", "paths"]},
                "OpenAPI 3.1, with this server's limits",
            )
        },
    },
}
"""Endpoint name -> Operation Object, less the parts ``web/openapi.py`` adds."""
