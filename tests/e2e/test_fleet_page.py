"""The operators' fleet page in a real browser: closed to anonymous visitors; signed in with
an admin token, it shows a real worker and the job it runs, without a reload."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import redis
from playwright.sync_api import expect

from stylequeue.shared.celery_app import create_celery, enqueue_run_job
from stylequeue.shared.progress import ProgressStream
from stylequeue.shared.settings import Settings, parse_admin_tokens
from tests.e2e.helpers import WAIT_MS
from tests.factories import make_job
from tests.services import served
from tests.worker_process import wait_for_status

pytestmark = pytest.mark.e2e

TOKEN = "e2e-operator-token"
OWNER = "web:e2e-fleet-owner-must-not-show"


def test_the_fleet_page_is_for_operators_and_shows_a_real_worker(
    browser, e2e_settings: Settings, e2e_redis: str, start_worker, screenshots: Path
) -> None:  # type: ignore[no-untyped-def]
    # Its own Redis database: only this test's worker is in this fleet.
    settings = replace(
        e2e_settings,
        redis_url=e2e_redis.rsplit("/", 1)[0] + "/8",
        admin_tokens=parse_admin_tokens(f"ops={TOKEN}"),
    )
    client = redis.Redis.from_url(settings.redis_url)
    client.flushdb()
    errors: list[object] = []
    with served(settings, "e2e-fleet-page") as url:
        context = browser.new_context(base_url=url)
        try:
            context.set_default_timeout(20_000)
            page = context.new_page()
            page.on("pageerror", lambda exc: errors.append(exc))

            # anonymous: refused, the sign-in form and nothing of the fleet
            response = page.goto("/fleet")
            assert response is not None and response.status == 401
            expect(page.locator("#admin-token")).to_be_visible()
            expect(page.locator("#fleet-root")).to_have_count(0)
            assert context.request.get("/api/v1/admin/fleet").status == 401
            page.fill("#admin-token", "not-the-token")
            page.locator("#sign-in-form button[type=submit]").click()
            expect(page.locator("#token-error")).to_contain_text("not an admin token")
            page.screenshot(path=str(screenshots / "fleet-sign-in.png"), full_page=True)
            assert context.request.get("/api/v1/admin/fleet").status == 401

            # signed in: the fleet (empty for now); the page follows it from here on
            page.fill("#admin-token", TOKEN)
            page.locator("#sign-in-form button[type=submit]").click()
            expect(page.locator("#no-workers")).to_be_visible()
            assert page.url.endswith("/fleet")
            page.evaluate("window.__sameDocument = true")  # gone if the page reloads

            worker = start_worker(settings, name="fleetpage")  # returns once warm and listed
            info = worker.fleet_info()
            assert info is not None
            row = page.locator(f'tr[data-worker="{worker.nodename}"]')
            expect(row).to_be_visible(timeout=WAIT_MS)
            expect(row).to_contain_text("CPU")
            expect(row).to_contain_text("random")
            expect(row).to_contain_text(info["precision"])
            expect(row).to_contain_text("idle")
            expect(page.locator("#sum-workers")).to_have_text("1")

            # a long job on it: its row shows the job and its iterations
            job = make_job(settings, owner=OWNER, params={"iterations": 5000, "max_size": 32})
            with create_celery(settings) as app:
                enqueue_run_job(app, job.id)
            expect(row.locator('[data-col="job"] [title]')).to_have_attribute(
                "title", job.id, timeout=WAIT_MS
            )
            expect(row.locator('[data-col="iteration"]')).to_contain_text("/ 5000")
            expect(page.locator("#sum-running")).to_have_text("1")
            page.screenshot(path=str(screenshots / "fleet.png"), full_page=True)
            assert OWNER not in page.content()
            assert page.evaluate("window.__sameDocument") is True

            ProgressStream(client).request_cancel(job.id)  # let the worker go
            wait_for_status(settings, job.id, "canceled", worker=worker)
            expect(row).to_contain_text("idle", timeout=WAIT_MS)
            expect(page.locator("#sum-canceled")).to_have_text("1")
        finally:
            context.close()
            client.close()
    assert not errors, f"uncaught errors in the page's script: {errors}"
