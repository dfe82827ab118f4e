"""The pages in a real browser, against the real app and a real Celery worker.

Random VGG19 weights and tiny pictures keep these quick; waits are generous polls, never
assertions on how long something took.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import re
import time
from dataclasses import replace
from pathlib import Path

import pytest
import redis
from PIL import Image
from playwright.sync_api import expect

from stylequeue.shared.progress import stream_key
from tests.e2e.conftest import ROOT, Stack
from tests.e2e.helpers import (
    WAIT_MS,
    api_submit,
    counter,
    fill_form,
    png_bytes,
    status,
    submit_form,
    wait_status,
)
from tests.services import served

pytestmark = pytest.mark.e2e


# Every value the iteration counter shows, from the first render on (the test's own polls
# could miss a fast job's steps).
COUNTER_RECORDER = """
document.addEventListener("DOMContentLoaded", () => {
  const node = document.getElementById("it-done");
  if (!node) return;
  window.__counter = [node.textContent];
  new MutationObserver(() => window.__counter.push(node.textContent))
    .observe(node, {childList: true, characterData: true, subtree: true});
});
"""


def _save_docs_screenshot(source: Path) -> None:
    """The finished dashboard for the README: palette-reduced PNG to keep the repo light.

    Written when missing or when STYLEQUEUE_UPDATE_DOCS=1, so a test run leaves the
    checkout clean.
    """
    target = ROOT / "docs" / "dashboard.png"
    if target.exists() and os.environ.get("STYLEQUEUE_UPDATE_DOCS") != "1":
        return
    target.parent.mkdir(exist_ok=True)
    with Image.open(source) as opened:
        image = opened.convert("RGB")
    image.thumbnail((1100, 2400))
    image.quantize(colors=128, method=Image.Quantize.FASTOCTREE).save(target, optimize=True)


def test_submit_watch_the_curve_and_download(
    page, stack: Stack, content_png: Path, screenshots: Path, tmp_path: Path
) -> None:
    fill_form(page, content_png, sample="the-scream", iterations=60, max_size=48, snapshot_every=5)
    # the sample painting is chosen (its tile checked) and the photo previewed
    assert page.locator("#sample-the-scream").is_checked()
    assert page.locator("#content-preview").evaluate("img => img.naturalWidth") > 0
    page.screenshot(path=str(screenshots / "form.png"), full_page=True)

    api_calls: list[str] = []
    page.on("request", lambda r: api_calls.append(r.url) if "/api/v1/jobs/" in r.url else None)
    page.add_init_script(COUNTER_RECORDER)
    job_id = submit_form(page)

    # the counter advances and the curve gets points while the job runs
    shot = False
    deadline = time.monotonic() + WAIT_MS / 1000
    while time.monotonic() < deadline and status(page) not in ("succeeded", "failed", "canceled"):
        if not shot and status(page) == "running" and 0 < counter(page) < 60:
            page.screenshot(path=str(screenshots / "dashboard-running.png"), full_page=True)
            shot = True
        page.wait_for_timeout(100)
    wait_status(page, "succeeded")
    seen = [int(v) for v in page.evaluate("window.__counter")]
    seen = [v for i, v in enumerate(seen) if i == 0 or v != seen[i - 1]]
    assert seen == sorted(seen) and len(seen) >= 2 and seen[-1] == 60, seen
    assert counter(page) == 60
    points = int(page.locator("#chart").get_attribute("data-points"))
    assert points == 60
    total_line = page.locator("#chart polyline[data-series='total']").get_attribute("points")
    assert len(total_line.split()) > 1

    # the best image, its iteration and loss, and a download of it
    page.wait_for_selector("#result-panel:not([hidden])")
    page.wait_for_function("() => document.querySelector('#result-img').naturalWidth > 0")
    assert "iteration" in page.locator("#result-caption").inner_text()
    with page.expect_download() as info:
        page.locator("#result-download").click()
    download = info.value
    assert download.suggested_filename.endswith(".png")
    data = Path(download.path()).read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    with Image.open(io.BytesIO(data)) as image:
        assert max(image.size) == 48

    # the chart's controls: linear scale, a part switched off
    chart = page.locator("#chart")
    page.locator("#log").uncheck()
    expect(chart).to_have_attribute("aria-label", re.compile("linear scale"))
    page.locator('input[data-series="tv"]').uncheck()
    expect(chart.locator("polyline[data-series='tv']")).to_have_count(0)
    page.locator('input[data-series="tv"]').check()
    page.locator("#log").check()
    expect(chart.locator("polyline")).to_have_count(4)
    chart.focus()
    page.keyboard.press("Home")
    expect(page.locator("#readout")).to_contain_text("iteration 1:")
    page.keyboard.press("Escape")
    expect(page.locator("#readout")).to_contain_text("iteration 60:")

    # every snapshot is in the strip (as a thumbnail) and the scrubber replays them
    page.wait_for_function("() => document.querySelectorAll('#strip button').length === 12")
    strip_srcs = page.eval_on_selector_all("#strip img", "imgs => imgs.map(i => i.src)")
    assert strip_srcs and all(src.endswith("?thumb=160") for src in strip_srcs), strip_srcs
    inputs_srcs = page.eval_on_selector_all(".inputs img", "imgs => imgs.map(i => i.src)")
    assert inputs_srcs and all("thumb=" in src for src in inputs_srcs), inputs_srcs
    page.locator("#scrubber").fill("0")
    assert "iteration 5 " in page.locator("#snap-caption").inner_text()
    page.wait_for_function("() => document.querySelector('#snap-img').alt.includes('iteration 5')")
    page.locator("#latest").click()
    assert "iteration 60 " in page.locator("#snap-caption").inner_text()

    # the fleet runs random weights: the page says so
    assert page.locator("#fleet-banner").is_visible()
    page.screenshot(path=str(screenshots / "dashboard-finished.png"), full_page=True)
    _save_docs_screenshot(screenshots / "dashboard-finished.png")
    page.set_viewport_size({"width": 375, "height": 800})
    page.screenshot(path=str(screenshots / "dashboard-finished-phone.png"), full_page=True)
    page.emulate_media(color_scheme="dark")
    page.screenshot(path=str(screenshots / "dashboard-finished-phone-dark.png"), full_page=True)
    page.emulate_media(color_scheme="light")
    page.set_viewport_size({"width": 1280, "height": 900})

    # polling stopped once the job ended
    page.wait_for_timeout(500)
    before = len(api_calls)
    page.wait_for_timeout(2500)
    assert len(api_calls) == before, api_calls[before:]
    # each poll asks only for entries after the last one it has (none yet: from the start)
    progress_calls = [u for u in api_calls if "/progress" in u]
    first_after = next(i for i, u in enumerate(progress_calls) if "after=" in u)
    assert all("after=" in u for u in progress_calls[first_after:]), progress_calls
    # a poll is two JSON requests (the job, its new entries); images only for new snapshots
    job_calls = [u for u in api_calls if u.endswith(f"/api/v1/jobs/{job_id}")]
    other = [u for u in api_calls if u not in job_calls and u not in progress_calls]
    assert len(job_calls) <= len(progress_calls) <= len(job_calls) + 2
    assert all("/snapshots/" in u or "/result" in u or "/inputs/" in u for u in other), other
    # the strip asks for small thumbnails; the big view and the result stay full size
    assert any("/snapshots/" in u and "thumb=160" in u for u in other), other
    assert any("/snapshots/" in u and "thumb=" not in u for u in other), other
    assert any(u.endswith("/result") for u in other), other
    (screenshots.parent / "requests-per-poll.json").write_text(
        json.dumps(
            {
                "polls": len(job_calls),
                "job_json_requests": len(job_calls),
                "progress_requests": len(progress_calls),
                "image_requests": len(other),
                "snapshots": 12,
            },
            indent=2,
        )
    )

    # the jobs list shows it, with its thumbnail (a small WebP of the result)
    list_images: list[str] = []
    page.on("request", lambda r: list_images.append(r.url) if r.resource_type == "image" else None)
    page.goto("/jobs")
    row = page.locator(f'li[data-job-id="{job_id}"]')
    row.locator(".badge.succeeded").wait_for()
    page.wait_for_function(
        "id => document.querySelector(`li[data-job-id='${id}'] img`).naturalWidth > 0",
        arg=job_id,
    )
    assert row.locator("img").get_attribute("src").endswith(f"/{job_id}/result?thumb=160")
    assert list_images and all("?thumb=" in u for u in list_images), list_images
    assert "60 / 60" in row.inner_text()
    page.screenshot(path=str(screenshots / "jobs.png"), full_page=True)

    # Redis forgets the stream: the dashboard draws the whole curve from the saved history
    client = redis.Redis.from_url(stack.settings.redis_url)
    try:
        client.delete(stream_key(job_id))
    finally:
        client.close()
    page.goto(f"/jobs/{job_id}")
    page.wait_for_function("() => document.querySelector('#chart').dataset.points === '60'")


def test_cancel_a_running_job_from_the_page(page, content_png: Path) -> None:
    fill_form(page, content_png, sample="starry-night", iterations=5000, max_size=64)
    submit_form(page)
    page.wait_for_function(
        "() => Number(document.querySelector('#it-done').textContent) > 0", timeout=WAIT_MS
    )
    assert status(page) == "running"
    assert page.locator("#cancel").is_visible()
    page.locator("#cancel").click()
    wait_status(page, "canceled")
    assert page.locator("#cancel").is_hidden()
    assert page.locator("#phase").inner_text() == "Canceled"
    assert counter(page) < 5000


def test_a_non_image_upload_shows_the_error_beside_the_field(page, tmp_path: Path) -> None:
    fake = {
        "name": "holiday.png",
        "mimeType": "image/png",
        "buffer": b"this is not a picture\n" * 20,
    }
    page.goto("/")
    page.locator('label[for="sample-shipwreck"]').click()

    # the browser's own check catches it first
    page.set_input_files("#content", files=[fake])
    error = page.locator("#content-error")
    error.wait_for(state="visible")
    assert "not an image" in error.inner_text()

    # with the client checks off, the server's answer lands beside the same field
    page.evaluate("document.querySelector('#job-form').dataset.clientChecks = 'off'")
    page.set_input_files("#content", files=[fake])
    page.wait_for_function("() => document.querySelector('#content-error').textContent === ''")
    with page.expect_response(lambda r: r.url.endswith("/api/v1/jobs")) as answer:
        page.locator("#submit").click()
    response = answer.value
    assert 400 <= response.status < 500
    body = response.json()["error"]
    assert body["field"] == "content"
    error.wait_for(state="visible")
    assert error.inner_text() == body["message"]
    assert error.get_attribute("role") == "alert"
    assert "content-error" in page.locator("#content").get_attribute("aria-describedby")
    assert page.locator("#content-drop").get_attribute("aria-invalid") == "true"
    assert page.url.endswith("/")


def test_another_browser_cannot_open_the_dashboard(
    new_context, stack: Stack, screenshots: Path
) -> None:
    owner = new_context()
    job = api_submit(owner, stack.url, png_bytes(), png_bytes(color=(10, 160, 90)),
                     iterations=3, max_size=32)  # fmt: skip
    mine = owner.new_page()
    assert mine.goto(f"/jobs/{job['id']}").status == 200

    stranger = new_context().new_page()
    response = stranger.goto(f"/jobs/{job['id']}")
    assert response.status == 404
    assert "No such job here" in stranger.locator("h1").inner_text()
    stranger.screenshot(path=str(screenshots / "not-found.png"))
    assert stranger.request.get(f"{stack.url}{job['links']['self']}").status == 404
    stranger.goto("/jobs")
    stranger.get_by_text("No pictures yet").wait_for()
    wait_status(mine, "succeeded", "failed")


def test_jobs_list_is_paginated_newest_first(new_context, stack: Stack) -> None:
    context = new_context()
    ids = [
        api_submit(context, stack.url, png_bytes(), png_bytes(), iterations=2, max_size=32)["id"]
        for _ in range(3)
    ]
    page = context.new_page()
    page.goto("/jobs?per_page=2")
    page.wait_for_selector("li.job-row")
    rows = page.locator("li.job-row")
    assert rows.count() == 2
    assert [rows.nth(i).get_attribute("data-job-id") for i in range(2)] == ids[::-1][:2]
    assert "Page 1 of 2" in page.locator("#page-label").inner_text()
    page.locator("#next").click()
    page.wait_for_url("**page=2**")
    page.wait_for_function("() => document.querySelectorAll('li.job-row').length === 1")
    assert rows.first.get_attribute("data-job-id") == ids[0]
    # it refreshes itself until every job has ended
    page.locator("li.job-row .badge.succeeded").wait_for(timeout=WAIT_MS)


@pytest.mark.parametrize("path", ["/", "/jobs", "dashboard"])
def test_phone_width_labels_and_keyboard(new_context, stack: Stack, path: str) -> None:
    context = new_context(viewport={"width": 375, "height": 740}, is_mobile=True)
    page = context.new_page()
    if path == "dashboard":
        job = api_submit(context, stack.url, png_bytes(), png_bytes(), iterations=4, max_size=32)
        path = f"/jobs/{job['id']}"
        page.goto(path)
        wait_status(page, "succeeded")
        page.locator("#fleet-banner").wait_for()  # the widest thing on the page
    else:
        page.goto(path)
        page.wait_for_load_state("networkidle")
    overflow = page.evaluate("document.documentElement.scrollWidth") - 375
    assert overflow <= 0, f"{path} scrolls sideways at 375 px by {overflow} px"
    unlabeled = page.evaluate(
        """() => [...document.querySelectorAll('input, select, button, textarea')]
            .filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label')
                         && !e.textContent.trim())
            .map(e => e.id || e.name || e.outerHTML.slice(0, 60))"""
    )
    assert unlabeled == []
    if path == "/":
        # keyboard only: tab to the first sample, choose it with the arrow keys
        page.locator("#content").focus()
        page.keyboard.press("Tab")
        focused = page.evaluate("document.activeElement.name")
        assert focused == "sample_style"
        page.keyboard.press("ArrowRight")
        assert page.locator("#sample-the-scream").is_checked()
        outline = page.evaluate(
            "getComputedStyle(document.activeElement.nextElementSibling).boxShadow"
        )
        assert outline != "none"


def test_page_weight(new_context, stack: Stack) -> None:
    """HTML + JS + CSS of each page on a first visit (cold cache): a budget, and a record.

    Images are recorded beside (not in the budget): on the list and in the dashboard's
    strip and inputs panel they must be thumbnails (``?thumb=``), never the stored PNGs.
    """
    owner = new_context()
    job = api_submit(owner, stack.url, png_bytes(), png_bytes(), iterations=2, max_size=32)
    cookies = owner.cookies()
    weights: dict[str, dict[str, int]] = {}
    for name, path in [("form", "/"), ("jobs", "/jobs"), ("dashboard", f"/jobs/{job['id']}")]:
        context = new_context()
        context.add_cookies(cookies)  # the same owner, an empty cache
        page = context.new_page()
        bodies: list[tuple[str, bytes]] = []
        pictures: list[tuple[str, int]] = []

        def record(response, bodies=bodies, pictures=pictures) -> None:  # type: ignore[no-untyped-def]
            kind = response.request.resource_type
            if kind in ("document", "script", "stylesheet"):
                bodies.append((kind, response.body()))
            elif kind == "image" and response.status == 200:
                pictures.append((response.url, len(response.body())))

        page.on("response", record)
        page.goto(path)
        page.wait_for_load_state("networkidle")
        if name == "dashboard":  # the inputs panel is below the fold: bring it in
            page.locator(".inputs").scroll_into_view_if_needed()
            page.wait_for_load_state("networkidle")
        sizes: dict[str, int] = {"requests": len(bodies)}
        for kind, body in bodies:
            sizes[kind] = sizes.get(kind, 0) + len(body)
        sizes["total"] = sum(len(b) for _, b in bodies)
        sizes["total_gzip"] = sum(len(gzip.compress(b, 9)) for _, b in bodies)
        sizes["images"] = len(pictures)
        sizes["image_bytes"] = sum(n for _, n in pictures)
        weights[name] = sizes
        if name == "jobs":
            assert pictures and all("?thumb=" in url for url, _ in pictures), pictures
        if name == "dashboard":
            inputs = [url for url, _ in pictures if "/inputs/" in url]
            assert len(inputs) == 2 and all("?thumb=" in url for url in inputs), pictures
    out = ROOT / "test-artifacts" / "page-weight.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(weights, indent=2))
    for name, sizes in weights.items():
        assert sizes["total"] < 80_000, (name, sizes)


def test_a_failed_job_shows_its_reason_and_a_queued_one_can_be_canceled(
    new_context, stack: Stack
) -> None:
    from stylequeue.shared.states import utcnow
    from tests.factories import make_job

    context = new_context()
    owner = context.request.get(f"{stack.url}/api/v1/session").json()["owner"]
    reason = "the style image could not be read: it was removed from storage"
    failed = make_job(stack.settings, owner=owner, status="failed", error=reason,
                      started_at=utcnow(), finished_at=utcnow())  # fmt: skip
    page = context.new_page()
    page.goto(f"/jobs/{failed.id}")
    assert page.locator("#error-box").is_visible()
    assert page.locator("#error-text").inner_text() == reason
    assert page.locator("#cancel").is_hidden()
    assert page.locator("#download").is_hidden()
    assert status(page) == "failed"

    # a job no worker has taken yet (never enqueued here): cancel takes effect at once
    queued = make_job(stack.settings, owner=owner)
    page.goto(f"/jobs/{queued.id}")
    assert page.locator("#phase").inner_text() == "Waiting for a worker…"
    page.locator("#cancel").click()
    wait_status(page, "canceled", timeout=20_000)
    assert page.locator("#cancel").is_hidden()


def test_drag_and_drop_previews_and_client_checks(page, content_png: Path) -> None:
    page.goto("/")
    data = list(content_png.read_bytes())
    transfer = page.evaluate_handle(
        """bytes => {
            const dt = new DataTransfer();
            dt.items.add(new File([new Uint8Array(bytes)], 'dropped.png', {type: 'image/png'}));
            return dt;
        }""",
        data,
    )
    page.dispatch_event("#content-drop", "drop", {"dataTransfer": transfer})
    page.wait_for_selector("#content-drop.has-file")
    assert "dropped.png" in page.locator("#content-hint").inner_text()
    assert page.locator("#content-preview").evaluate("img => img.naturalWidth") > 0
    # numbers are checked against the server's limits before anything is sent
    page.locator("#iterations").fill("999999")
    page.locator("#max_size").fill("12")
    page.locator("#submit").click()
    expect(page.locator("#iterations-error")).to_contain_text("1 to 5000")
    expect(page.locator("#max_size-error")).to_contain_text("16 to 128")
    expect(page.locator("#iterations")).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#iterations")).to_be_focused()
    assert page.url.endswith("/")
    # choosing a preset fills its values back in and clears those errors
    page.locator('label[for="preset-balanced"]').click()
    expect(page.locator("#iterations")).to_have_value("300")
    expect(page.locator("#iterations-error")).to_be_empty()


def test_form_warns_when_a_worker_cannot_load_its_weights(page, stack: Stack) -> None:  # type: ignore[no-untyped-def]
    """A worker that announced unusable weights (as one offline with `imagenet` does) puts a
    banner on the form; the worker's own reason is the operators' (it may name paths)."""
    from stylequeue.shared import fleet

    client = redis.Redis.from_url(stack.settings.redis_url)
    reason = "VGG19 weights 'imagenet' unavailable: the download failed (offline)"
    fleet.announce(client, "offline-gpu", {"weights": "imagenet", "weights_ok": False,
                                           "weights_error": reason}, ttl=60)  # fmt: skip
    try:
        page.goto(stack.url + "/")
        banner = page.locator("#weights-banner")
        expect(banner).to_be_visible(timeout=WAIT_MS)
        expect(banner).to_contain_text("could not load its VGG19 weights")
        expect(banner).not_to_contain_text(reason)
        expect(page.locator("#workers-banner")).to_be_hidden()  # a worker is online
    finally:
        fleet.retire(client, "offline-gpu")
        client.close()
    page.goto(stack.url + "/")
    page.wait_for_load_state("networkidle")
    expect(page.locator("#weights-banner")).to_be_hidden()


# ---- the fleet's banners follow the fleet -----------------------------------------------------


def test_the_banners_follow_the_fleet_without_a_reload(
    browser, e2e_settings, e2e_redis: str, start_worker
) -> None:  # type: ignore[no-untyped-def]
    """A dashboard and a form opened while no worker is online say so; when a worker comes
    up, the banner goes on its own on both (no reload), and the finished job has none.

    Its own Redis database, so the session's worker is not in this fleet.
    """
    from stylequeue.shared.celery_app import create_celery, enqueue_run_job
    from tests.factories import make_job

    settings = replace(e2e_settings, redis_url=e2e_redis.rsplit("/", 1)[0] + "/7")
    client = redis.Redis.from_url(settings.redis_url)
    client.flushdb()
    client.close()
    errors: list[object] = []
    with served(settings, "e2e-fleet-server") as url:
        context = browser.new_context(base_url=url)
        try:
            context.set_default_timeout(20_000)
            page = context.new_page()
            page.on("pageerror", lambda exc: errors.append(exc))
            owner = context.request.get("/api/v1/session").json()["owner"]
            job = make_job(settings, owner=owner)  # queued, not enqueued: it waits for us
            page.goto(f"/jobs/{job.id}")
            workers_banner = page.locator("#workers-banner")
            expect(workers_banner).to_be_visible()
            expect(page.locator("#fleet-banner")).to_be_hidden()
            page.evaluate("window.__sameDocument = true")  # gone if the page reloads
            form = context.new_page()
            form.on("pageerror", lambda exc: errors.append(exc))
            form.goto("/")
            expect(form.locator("#workers-banner")).to_be_visible()
            form.evaluate("window.__sameDocument = true")

            start_worker(settings, name="late")  # returns once warm and in the fleet
            expect(workers_banner).to_be_hidden(timeout=WAIT_MS)
            expect(form.locator("#workers-banner")).to_be_hidden(timeout=WAIT_MS)
            assert form.evaluate("window.__sameDocument") is True
            assert status(page) == "queued"  # the fleet hid it, not the job ending
            expect(page.locator("#fleet-banner")).to_be_visible()  # it runs random weights
            assert page.evaluate("window.__sameDocument") is True

            # the worker takes the job: its finished page has no "No worker online" either
            with create_celery(settings) as app:
                enqueue_run_job(app, job.id)
            wait_status(page, "succeeded")
            expect(workers_banner).to_be_hidden()
            assert page.evaluate("window.__sameDocument") is True
        finally:
            context.close()
    assert not errors, f"uncaught errors in the pages' scripts: {errors}"


def test_the_curve_of_a_resumed_job_drops_the_recomputed_points(new_context, stack: Stack) -> None:
    """A job resumed from a checkpoint at 6 after its worker died at 8: the page had drawn
    1..8; the stream now holds 1..6, then 7.. again. The curve keeps 1..6 and draws each
    later iteration once (it used to start again from 7)."""
    from stylequeue.shared.progress import ProgressStream
    from stylequeue.shared.states import utcnow
    from tests.factories import make_job

    context = new_context()
    owner = context.request.get(f"{stack.url}/api/v1/session").json()["owner"]
    job = make_job(stack.settings, owner=owner, status="running", attempts=1,
                   started_at=utcnow(), params={"iterations": 12})  # fmt: skip
    client = redis.Redis.from_url(stack.settings.redis_url)
    stream = ProgressStream(client)

    def entry(i: int) -> dict[str, float]:
        return {"iteration": i, "loss": 100.0 - i, "content": 1, "style": 2, "tv": 3,
                "elapsed": i}  # fmt: skip

    try:
        ids = [stream.append(job.id, entry(i)) for i in range(1, 9)]
        page = context.new_page()
        page.goto(f"/jobs/{job.id}")
        page.wait_for_function("() => document.querySelector('#chart').dataset.points === '8'")
        client.xdel(stream_key(job.id), *ids[6:])  # what the resumed attempt's trim does
        stream.append_many(job.id, [entry(i) for i in range(7, 11)])
        page.wait_for_function("() => document.querySelector('#chart').dataset.points === '10'")
    finally:
        client.delete(stream_key(job.id))
        client.close()


def test_a_print_shows_the_tiles_of_its_iteration(new_context, stack: Stack) -> None:
    """A job painted in tiles takes minutes an iteration: the dashboard says how far the
    running one is, from the runner's tile stream, and drops it once the iteration is done."""
    from stylequeue.shared.redis_keys import lock_key, tiles_key
    from stylequeue.shared.states import utcnow
    from stylequeue.shared.tile_progress import AttemptTiles
    from tests.factories import make_job

    context = new_context()
    owner = context.request.get(f"{stack.url}/api/v1/session").json()["owner"]
    job = make_job(stack.settings, owner=owner, status="running", attempts=1, iterations_done=2,
                   started_at=utcnow(), params={"iterations": 12})  # fmt: skip
    client = redis.Redis.from_url(stack.settings.redis_url)
    client.set(lock_key(job.id), "e2e-token", ex=300)
    tiles = AttemptTiles(client, job.id, "e2e-token", ttl=300)
    try:
        tiles.append_checking_cancel(
            {"iteration": 3, "phase": "step", "done": 4, "total": 9, "elapsed": 40.0}
        )
        page = context.new_page()
        page.goto(f"/jobs/{job.id}")
        phase = page.locator("#phase")
        expect(phase).to_have_text("Painting… iteration 3: tile 4 of 9")
        tiles.append_checking_cancel(
            {"iteration": 3, "phase": "step", "done": 5, "total": 9, "elapsed": 50.0}
        )
        expect(phase).to_have_text("Painting… iteration 3: tile 5 of 9")
    finally:
        client.delete(lock_key(job.id), tiles_key(job.id))
        client.close()
