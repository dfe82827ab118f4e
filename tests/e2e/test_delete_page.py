"""Deleting a job from its dashboard, and the date retention deletes it, in real Chromium
against the real app and a real Celery worker (the session's stack)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from playwright.sync_api import expect

from stylequeue.shared.states import utcnow
from tests.e2e.conftest import Stack
from tests.e2e.helpers import WAIT_MS, api_submit, png_bytes, status, wait_status
from tests.factories import make_job
from tests.services import wait_for

pytestmark = pytest.mark.e2e


def files_of(stack: Stack, job_id: str) -> list[str]:
    root = Path(stack.settings.storage_url.removeprefix("file://"), "jobs", job_id)
    return [str(Path(d, f)) for d, _, files in os.walk(root) for f in files]


def test_delete_a_running_job_after_confirming(new_context, stack: Stack) -> None:  # type: ignore[no-untyped-def]
    context = new_context()
    job = api_submit(context, stack.url, png_bytes(), png_bytes((40, 40), (30, 160, 90)),
                     iterations=5000, max_size=48, snapshot_every=5)  # fmt: skip
    page = context.new_page()
    page.goto(f"/jobs/{job['id']}")
    page.wait_for_function(
        "() => Number(document.querySelector('#it-done').textContent) > 5", timeout=WAIT_MS
    )
    expect(page.locator("#expiry-text")).to_have_text(
        f"Deleted automatically {stack.settings.retention_days} days after it ends."
    )
    dialog = page.locator("#delete-dialog")

    # asked, and kept: nothing happens
    page.locator("#delete").click()
    expect(dialog).to_be_visible()
    expect(page.locator("#delete-what")).to_contain_text("stopped first")
    dialog.get_by_role("button", name="Keep it").click()
    expect(dialog).to_be_hidden()
    assert status(page) == "running"
    assert context.request.get(f"{stack.url}/api/v1/jobs/{job['id']}").status == 200

    # asked again, and confirmed: gone, back on the list, which says so
    page.locator("#delete").click()
    dialog.get_by_role("button", name="Delete for good").click()
    page.wait_for_url(re.compile(r"/jobs(\?deleted=\w+)?$"), timeout=30_000)
    expect(page).to_have_url(f"{stack.url}/jobs")  # the note's word taken off the URL
    expect(page.locator("#deleted-note")).to_have_text(f"Job {job['id'][:8]} deleted.")
    expect(page.locator("#jobs-root")).to_contain_text("No pictures yet")
    assert context.request.get(f"{stack.url}/api/v1/jobs/{job['id']}").status == 404
    assert context.request.get(f"{stack.url}/jobs/{job['id']}").status == 404
    # the worker stops and purges the job: nothing of it stays in storage
    wait_for(
        lambda: f"job {job['id']}: deleted while running" in stack.worker.log_text(),
        timeout=WAIT_MS / 1000, what="the worker stopped the deleted job",
    )  # fmt: skip
    wait_for(lambda: files_of(stack, job["id"]) == [], timeout=60, what="files purged")


def test_a_finished_job_says_when_it_expires_and_a_failed_one_can_be_deleted(
    new_context,
    stack: Stack,  # type: ignore[no-untyped-def]
) -> None:
    context = new_context()
    owner = context.request.get(f"{stack.url}/api/v1/session").json()["owner"]
    failed = make_job(stack.settings, owner=owner, status="failed", error="boom",
                      started_at=utcnow(), finished_at=utcnow())  # fmt: skip
    page = context.new_page()
    page.goto(f"/jobs/{failed.id}")
    wait_status(page, "failed", timeout=20_000)
    expires = context.request.get(f"{stack.url}/api/v1/jobs/{failed.id}").json()["expires_at"]
    assert expires
    expect(page.locator("#expiry-text")).to_have_text("Deleted automatically on")
    expect(page.locator("#expires-at")).to_have_attribute("datetime", expires)
    shown = page.locator("#expires-at").inner_text()
    assert shown == page.evaluate("iso => new Date(iso).toLocaleString()", expires)
    expect(page.locator("#delete-what")).not_to_contain_text("stopped first")

    page.locator("#delete").click()
    page.keyboard.press("Escape")  # Escape keeps it, as "Keep it" does
    expect(page.locator("#delete-dialog")).to_be_hidden()
    assert context.request.get(f"{stack.url}/api/v1/jobs/{failed.id}").status == 200
    page.locator("#delete").click()
    page.locator("#delete-confirm").click()
    expect(page).to_have_url(f"{stack.url}/jobs", timeout=30_000)
    assert context.request.get(f"{stack.url}/api/v1/jobs/{failed.id}").status == 404
    assert files_of(stack, failed.id) == []
