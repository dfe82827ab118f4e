"""Schemathesis against the live app: generated requests, from its own OpenAPI document.

The app runs over real HTTP (``tests/web/live.py``) on real Redis, SQLite or PostgreSQL
and folder storage; Schemathesis reads ``/api/v1/openapi.json`` and sends, bounded and
seeded so a failure reproduces (its report carries a curl command):

1. the coverage phase: each parameter's boundary values and the ways to break it, and
   the methods a path does not take (deterministic, no randomness);
2. every operation with requests that fit the document (positive) and, where a request
   can get something wrong, with requests that break it (negative: each must be refused
   with a 4xx), drawn by Hypothesis with ``derandomize`` (the same code and document give
   the same requests);
3. a stateful run along the document's links (submit, then read, cancel and fetch the
   job it made), each sequence from an empty service.

Every response goes through Schemathesis' checks: no 5xx, status codes, content types,
headers and bodies as documented, refused negative data, accepted positive data. After each
phase and each sequence the database and storage are read: a row for each ``201`` and no
other, stored files only for those rows (nothing stored by a refused request).

Three rules of a submit reach across fields, so no schema can say them, and the positive
requests are kept inside them (:func:`_within_cross_field_rules`): ``style_blend`` has one
weight per style image, finite, within range and not all 0; ``content_weight`` and
``style_weight`` are not both 0; ``webhook_events`` needs a ``webhook``. The content image
painted at ``max_size`` must keep the network's minimum side (``too_small_to_paint``): the
generated images are square and at least that side, so every ``max_size`` the document
allows fits them. Whether the server
may call a webhook is decided by resolving its host (``shared/webhook_targets.py``), which
no schema can say either: a positive submit's webhook is this run's loopback receiver
(:func:`_receivable`; the app allows loopback and plain http, as tests and ``make run`` do).

The app runs without rate limits. The document does declare their 429 (with
``Retry-After``) on every operation, and Schemathesis takes a 429 for an accepted request,
so nothing would fail; but past the 20th submit in a minute every submit would be a 429,
so most of the run would test the limiter instead of the submit, and a stateful sequence
replayed by Hypothesis must meet the same answers, which a window over wall-clock time
does not give. The limits' own 429s are checked against the document in
``tests/web/test_rate_limits.py``.

Deleting is part of the stateful run (the ``DeleteJob`` link): a job deleted with a 204
has no row and no file left, and no tombstone (its purge finished at once).

Figures (requests sent, by status): ``pytest -s tests/web/test_api_fuzz.py``; about 500
requests per database, the same ones each run.
"""

from __future__ import annotations

import io
import math
import re
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import pytest
import redis
import schemathesis
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from PIL import Image
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import ignored_auth
from schemathesis.specs.openapi.media_types import unregister_all
from schemathesis.transport.serialization import Binary
from sqlalchemy import delete, select

from stylequeue.shared.db import session_scope
from stylequeue.shared.models import Job, JobDeletion
from stylequeue.shared.params import PARAMETERS, TransferParams, job_min_side
from stylequeue.shared.settings import Settings
from stylequeue.shared.storage import get_storage
from stylequeue.web import create_app
from stylequeue.web.auth import CSRF_HEADER
from stylequeue.web.idempotency import KEY_HEADER, KEY_MAX_LENGTH, KEY_PATTERN
from stylequeue.web.param_schema import STYLE_FIELD
from tests.web.helpers import ALICE, with_settings
from tests.web.live import AnswerLog, serve

# The budget: examples per operation and mode, stateful sequences (of up to STEPS calls).
POSITIVE_EXAMPLES = 6
NEGATIVE_EXAMPLES = 6
STATEFUL_EXAMPLES = 15
STEPS = 6
MIN_REQUESTS = 150  # fewer means the run did not happen as planned
SUBMIT = "POST /api/v1/jobs"
# A positive submit's webhook: loopback, allowed in this run (webhooks.allow_private); nothing
# listens there, and no worker runs to send it anything but a cancel's event.
RECEIVER = "http://127.0.0.1:9/stylequeue-fuzz"
PAINTABLE_SIDE = job_min_side(TransferParams())  # the default layers' (not a form field)
# Checks left out, and why: ignored_auth reads a success made with our valid bearer token
# as one made with the cookie it generates for the other declared way in (the document
# offers bearer OR cookie + CSRF); tests/web/test_auth.py covers who may do what.
EXCLUDED_CHECKS = [ignored_auth]
HYPOTHESIS = {
    "derandomize": True,  # seeded by the test itself: a failure reproduces
    "database": None,
    "deadline": None,
    "suppress_health_check": list(HealthCheck),
    "phases": [Phase.explicit, Phase.generate],  # no shrinking: the server keeps state
}


def _image(fmt: str) -> st.SearchStrategy[bytes]:
    def encode(width: int, height: int, rgb: tuple[int, int, int]) -> bytes:
        out = io.BytesIO()
        Image.new("RGB", (width, height), rgb).save(out, format=fmt)
        return out.getvalue()

    channel = st.integers(0, 255)
    side = st.integers(PAINTABLE_SIDE, PAINTABLE_SIDE + 24)  # square: the docstring says why
    return st.builds(lambda n, rgb: encode(n, n, rgb), side, st.tuples(channel, channel, channel))


@pytest.fixture
def image_media_types() -> Iterator[None]:
    """Positive submits carry real (small) images of the three formats the server takes."""
    schemathesis.openapi.media_type("image/png", _image("PNG"))
    schemathesis.openapi.media_type("image/jpeg", _image("JPEG"))
    schemathesis.openapi.media_type("image/webp", _image("WEBP"))
    yield
    unregister_all()


def _form(case: Any) -> dict[str, Any] | None:
    body = getattr(case.body, "body", case.body)  # a form body with its parts' types, or not
    return body if isinstance(body, dict) else None


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _within_cross_field_rules(form: dict[str, Any]) -> bool:
    """The two rules of a submit that no schema can say (the module's docstring)."""
    styles = form.get(STYLE_FIELD)
    n_styles = len(styles) if isinstance(styles, list) else 1
    blend = form.get("style_blend")
    if isinstance(blend, str) and blend.strip():
        weights = [_number(x) for x in blend.split(",")]
        high = PARAMETERS["style_blend"].high or math.inf
        if len(weights) != n_styles or any(w is None or not 0 <= w <= high for w in weights):
            return False
        if sum(w or 0.0 for w in weights) <= 0:
            return False
    content, style = form.get("content_weight"), form.get("style_weight")
    if content is not None and style is not None and content == 0 == style:
        return False
    return not (_given(form.get("webhook_events")) and not _given(form.get("webhook")))


def _given(value: Any) -> bool:
    """A form field that is there and not empty (empty means the default)."""
    return value is not None and value != ""


def _one_file_per_style_part(body: Any) -> Any:
    """A custom media type's strategy hands one file for the ``style`` array: send it as one
    file part (with its filename), as the document says."""
    form = getattr(body, "body", body)
    if isinstance(form, dict) and isinstance(form.get(STYLE_FIELD), bytes | Binary):
        form[STYLE_FIELD] = [form[STYLE_FIELD]]
    return body


def _fresh_key(headers: Any) -> Any:
    """A valid Idempotency-Key is made fresh: Hypothesis and the boundary values draw "0"
    again and again, and the same key with other inputs is rightly a 422
    (test_idempotency.py covers reuse); a stateful sequence must also meet the same answers
    when replayed. An invalid key (a negative case) stays as drawn."""
    key = (headers or {}).get(KEY_HEADER)
    if isinstance(key, str) and len(key) <= KEY_MAX_LENGTH and re.fullmatch(KEY_PATTERN, key):
        headers[KEY_HEADER] = str(uuid.uuid4())
    return headers


def _positive_submit(case: Any) -> bool:
    return (
        case.operation.label == SUBMIT
        and case.meta is not None
        and case.meta.generation.mode.is_positive
    )


def _receivable(case: Any) -> Any:
    """A positive submit's webhook is this run's receiver (the module's docstring); an
    empty one too (also accepted: no webhook), or generation would hardly ever make a job
    with a webhook (a URL that fits the pattern is a rare draw)."""
    form = _form(case) if _positive_submit(case) else None
    if form is not None and "webhook" in form:
        form["webhook"] = RECEIVER
    return case


def _kept(case: Any) -> bool:
    """Positive submits stay within the cross-field rules; everything else goes."""
    if case.operation.label != SUBMIT or case.meta is None:
        return True
    if not case.meta.generation.mode.is_positive:
        return True
    form = _form(case)
    return form is None or _within_cross_field_rules(form)


def _install_hooks(schema: Any) -> None:
    schema.hook("map_body")(lambda context, body: _one_file_per_style_part(body))
    schema.hook("map_headers")(lambda context, headers: _fresh_key(headers))
    schema.hook("filter_case")(lambda context, case: _kept(case))
    schema.hook("map_case")(lambda context, case: _receivable(case))


AUTH_HEADERS = {"authorization", CSRF_HEADER.lower()}


def _can_be_broken(operation: Any) -> bool:
    """Has a part a request can get wrong (not a string path parameter: any string is one;
    not the credentials: they are ours)."""
    headers = [h for h in operation.headers if h.name.lower() not in AUTH_HEADERS]
    typed_path = [
        p for p in operation.path_parameters if p.definition["schema"]["type"] != "string"
    ]
    return bool(operation.query or operation.body or headers or typed_path)


def _run_operation(
    operation: Any, mode: GenerationMode, examples: int, failures: list[str]
) -> None:
    @given(case=operation.as_strategy(generation_mode=mode))
    @hypothesis_settings(max_examples=examples, **HYPOTHESIS)
    def run(case: Any) -> None:
        try:
            case.call_and_validate(excluded_checks=EXCLUDED_CHECKS)
        except (Exception, BaseExceptionGroup) as exc:
            failures.append(f"{operation.label} ({mode.value}): {exc}")

    run()


def _run_coverage(schema: Any, operation: Any, failures: list[str]) -> int:
    """Schemathesis' coverage phase: each parameter's boundary values and the ways to break
    it (no randomness). Returns the requests sent."""
    config = schema.config.generation_for(operation=operation, phase="coverage")
    modes = [GenerationMode.POSITIVE, GenerationMode.NEGATIVE]
    sent = 0
    for case in schema.iter_coverage_cases(
        operation, generation_modes=modes, generation_config=config
    ):
        _fresh_key(case.headers)
        if not _kept(case):
            continue
        _receivable(case)
        sent += 1
        try:
            case.call_and_validate(excluded_checks=EXCLUDED_CHECKS)
        except (Exception, BaseExceptionGroup) as exc:
            failures.append(f"{operation.label} (coverage): {exc}")
    return sent


def _run_stateful(schema: Any, ledger: Ledger, failures: list[str]) -> None:
    class Links(schema.as_state_machine()):  # type: ignore[misc]
        def validate_response(self, response: Any, case: Any, **kwargs: Any) -> None:
            try:
                case.validate_response(response, excluded_checks=EXCLUDED_CHECKS)
            except (Exception, BaseExceptionGroup) as exc:
                failures.append(f"{case.operation.label} (stateful): {exc}")

        def teardown(self) -> None:
            # Each sequence starts from an empty service, so the same draws meet the same
            # answers (Hypothesis requires it) and its own refusals are checked alone.
            ledger.check_and_clear()

    Links.run(
        settings=hypothesis_settings(
            max_examples=STATEFUL_EXAMPLES, stateful_step_count=STEPS, **HYPOTHESIS
        )
    )


hooked = Job.webhook_url.is_not(None)


def _job_id(url: str | None) -> str | None:
    found = re.fullmatch(r"/api/v1/jobs/([0-9a-f-]{36})", url or "")
    return found.group(1) if found else None


@dataclass
class Ledger:
    """What the service holds against what it answered: a row for each ``201`` not deleted
    since (a ``204`` to its DELETE) and no other, stored files only for those rows (nothing
    stored by a refused request, nothing left of a deleted job), no tombstone left."""

    settings: Settings
    log: AnswerLog
    checked: int = 0  # answers already accounted for
    jobs_made: int = 0
    jobs_deleted: int = 0
    with_webhook: int = 0  # jobs still there at the check that name a webhook

    def check_and_clear(self) -> None:
        answers = self.log.answers[self.checked :]
        self.checked += len(answers)
        made = {_job_id(a.location) for a in answers if a.method == "POST" and a.status == 201}
        deleted = {_job_id(a.path) for a in answers if a.method == "DELETE" and a.status == 204}
        made -= deleted
        made.discard(None)
        with session_scope(self.settings.database_url) as session:
            rows: set[str | None] = set(session.scalars(select(Job.id)))
            tombstones = set(session.scalars(select(JobDeletion.job_id)))
            self.with_webhook += len(list(session.scalars(select(Job.id).where(hooked))))
            session.execute(delete(Job))
            session.execute(delete(JobDeletion))
        storage = get_storage(self.settings)
        stored: set[str | None] = {key.split("/")[1] for key in storage.list("jobs/")}
        storage.delete_prefix("jobs/")
        redis.Redis.from_url(self.settings.redis_url).flushdb()
        assert rows == made, f"rows without a 201: {rows - made}; 201s without one: {made - rows}"
        assert stored <= rows, f"files of no job (a refused request stored them): {stored - rows}"
        assert stored == rows, f"jobs without their inputs: {rows - stored}"
        assert not tombstones, f"deleted jobs whose purge did not finish: {tombstones}"
        self.jobs_made += len(rows | deleted - {None})
        self.jobs_deleted += len(deleted - {None})


def test_generated_requests_keep_the_contract(
    settings: Settings, image_media_types: None, capsys: pytest.CaptureFixture[str]
) -> None:
    # Room for the default preset (300 iterations at 512 px) and for every submit to land.
    roomy = replace(
        with_settings(settings, max_iterations=1000, max_size=512, max_active_jobs=10_000),
        submit_rate_limit="",  # no rate limits: the module's docstring says why
        auth_failure_rate_limit="",
        webhooks=replace(settings.webhooks, allow_private=True, allow_http=True),
    )
    failures: list[str] = []
    with serve(create_app(roomy)) as (base, log):
        schema = schemathesis.openapi.from_url(f"{base}/api/v1/openapi.json")
        schema.config.update(headers=ALICE)
        _install_hooks(schema)
        ledger = Ledger(roomy, log)
        for result in schema.get_all_operations():
            operation = result.ok()
            _run_coverage(schema, operation, failures)
            _run_operation(operation, GenerationMode.POSITIVE, POSITIVE_EXAMPLES, failures)
            if _can_be_broken(operation):
                _run_operation(operation, GenerationMode.NEGATIVE, NEGATIVE_EXAMPLES, failures)
        ledger.check_and_clear()
        stateless = len(log.answers)
        _run_stateful(schema, ledger, failures)
    ledger.check_and_clear()
    statuses = Counter(f"{a.method} {a.status}" for a in log.answers)
    with capsys.disabled():
        print(
            f"\nschemathesis on {settings.database_url.split(':')[0]}: "
            f"{len(log.answers)} requests ({stateless} stateless, "
            f"{len(log.answers) - stateless} stateful), {ledger.jobs_made} jobs made, "
            f"{ledger.jobs_deleted} deleted, {ledger.with_webhook} with a webhook, "
            f"{len(failures)} failures; {dict(sorted(statuses.items()))}"
        )
    assert not failures, "\n\n".join(failures)
    assert len(log.answers) >= MIN_REQUESTS, statuses
    assert statuses["POST 201"] > 0, "no submit succeeded: the run tested little"
