"""Bounded work and storage (issue 12, section 1): caps across anonymous sessions and per
client address, the storage quota, STYLEQUEUE_ANONYMOUS=off, cheap checks before decoding,
compact inputs, and jobs that could only fail refused at submit."""

from __future__ import annotations

import io
from dataclasses import replace
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from PIL import Image
from werkzeug.test import TestResponse

from stylequeue.shared import uploads
from stylequeue.shared.images import decode_upright
from stylequeue.shared.settings import Settings
from stylequeue.shared.storage import Storage
from stylequeue.web import create_app
from tests.web import images
from tests.web.helpers import count_jobs, error_of, load_job, submit, with_settings

SMALL = {"iterations": "5", "max_size": "64"}


def app_with(settings: Settings, **overrides: Any) -> Flask:
    return create_app(replace(settings, **overrides))


def browser(app: Flask, address: str = "203.0.113.7") -> FlaskClient:
    """A new browser (its own session, so its own anonymous owner) at ``address``."""
    client = app.test_client()
    client.environ_base["REMOTE_ADDR"] = address
    return client


def browser_submit(client: FlaskClient, **kwargs: Any) -> TestResponse:
    token = client.get("/api/v1/session").get_json()["csrf_token"]
    return submit(client, {"X-CSRF-Token": token}, **kwargs)


def nothing_stored(settings: Settings, storage: Storage) -> bool:
    return storage.list("jobs/") == [] and count_jobs(settings) == 0


# ---- caps across anonymous sessions, per address, per owner's storage -----------------------


def test_fresh_sessions_cannot_pass_the_anonymous_cap(settings: Settings) -> None:
    """Three fresh sessions used to queue ten jobs each; together they now stop at the cap."""
    app = app_with(settings, anonymous_max_active_jobs=4, max_active_jobs_per_address=100)
    made = []
    for i in range(3):
        client = browser(app, f"198.51.100.{i}")
        made += [browser_submit(client).status_code for _ in range(2)]
    assert made == [201, 201, 201, 201, 429, 429]
    refused = browser_submit(browser(app, "198.51.100.9"))
    assert refused.status_code == 429 and refused.headers["Retry-After"]
    assert error_of(refused)["code"] == "anonymous_capacity"
    assert submit(app.test_client()).status_code == 201  # an API token has its own cap
    assert count_jobs(settings) == 5


def test_sessions_of_one_address_share_its_cap(settings: Settings) -> None:
    app = app_with(settings, anonymous_max_active_jobs=100, max_active_jobs_per_address=2)
    assert browser_submit(browser(app)).status_code == 201
    assert browser_submit(browser(app)).status_code == 201
    third = browser_submit(browser(app))
    assert third.status_code == 429 and error_of(third)["code"] == "address_capacity"
    assert browser_submit(browser(app, "192.0.2.44")).status_code == 201  # another address
    assert count_jobs(settings) == 3


def test_the_storage_quota_counts_stored_inputs(settings: Settings, storage: Storage) -> None:
    content, style = images.noisy_jpeg((64, 48)), images.jpeg()
    first = submit(create_app(settings).test_client(), content=content, styles=[style])
    row = load_job(settings, first.get_json()["id"])
    stored = sum(
        len(storage.get(k)) for k in [row.input_keys["content"], *row.input_keys["styles"]]
    )
    assert row.input_bytes == stored == len(content) + len(style)  # JPEGs kept as sent

    tight = app_with(settings, storage_quota_bytes=stored + stored // 2).test_client()
    refused = submit(tight, content=content, styles=[style])
    assert refused.status_code == 403
    assert error_of(refused)["code"] == "storage_quota_exceeded"
    assert count_jobs(settings) == 1 and len(storage.list("jobs/")) == 2  # nothing new
    bob = submit(tight, {"Authorization": "Bearer bob-token"}, content=content, styles=[style])
    assert bob.status_code == 201  # another owner's own quota


def test_anonymous_off_needs_a_token(settings: Settings, storage: Storage) -> None:
    app = app_with(settings, anonymous=False)
    client = browser(app)
    refused = browser_submit(client)
    assert refused.status_code == 401 and error_of(refused)["code"] == "token_required"
    assert nothing_stored(settings, storage)
    page = client.get("/").get_data(as_text=True)
    assert 'id="token-required"' in page and 'id="job-form"' not in page
    assert submit(app.test_client()).status_code == 201
    assert 'id="job-form"' in browser(create_app(settings)).get("/").get_data(as_text=True)


# ---- cheap checks first -------------------------------------------------------------------


def flat_png(side: int) -> bytes:
    return images.encode(Image.new("RGB", (side, side), "white"), "PNG", optimize=True)


def test_every_header_is_checked_before_any_file_is_decoded(
    settings: Settings, storage: Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A flat 6000x6000 PNG (small to send, 2.9 s to decode) with an HTML "style": the style
    is refused from its first bytes, and no image is decoded at all."""
    decoded: list[str] = []

    def counting(data: bytes, field: str, max_side: int | None = None) -> Image.Image:
        decoded.append(field)
        return decode_upright(data, field, max_side)

    monkeypatch.setattr(uploads, "decode_upright", counting)
    roomy = with_settings(settings, max_image_pixels=40_000_000)
    client = create_app(roomy).test_client()
    content = flat_png(6000)
    assert len(content) < roomy.limits.max_upload_bytes
    response = submit(client, content=content, styles=[b"<html><script>x</script></html>"])
    assert response.status_code == 415 and error_of(response)["field"] == "style"
    assert decoded == []
    assert nothing_stored(settings, storage)
    # a second style over the pixel limit: refused from its header too, nothing decoded
    bomb = images.png_bomb(10_000, 10_000)
    response = submit(client, content=images.png(), styles=[images.jpeg(), bomb])
    assert response.status_code == 413 and error_of(response)["field"] == "style"
    assert decoded == []
    assert submit(client).status_code == 201 and decoded == ["content", "style"]


# ---- stored inputs: compact, no second lossy step ------------------------------------------


def test_jpeg_and_webp_are_kept_as_sent(
    client: FlaskClient, settings: Settings, storage: Storage
) -> None:
    content = images.noisy_jpeg((96, 64))
    style = images.encode(Image.new("RGB", (40, 40), "purple"), "WEBP", quality=80)
    job = submit(client, content=content, styles=[style]).get_json()
    row = load_job(settings, job["id"])
    assert storage.get(row.input_keys["content"]) == content
    assert storage.get(row.input_keys["styles"][0]) == style
    assert row.input_keys["content"].endswith(".jpg")


def test_png_becomes_lossless_webp(
    client: FlaskClient, settings: Settings, storage: Storage
) -> None:
    content = images.noisy_png((90, 60))
    job = submit(client, content=content).get_json()
    stored = storage.get(load_job(settings, job["id"]).input_keys["content"])
    assert images.stored_format(stored) == "WEBP"
    assert len(stored) < len(content)
    original = Image.open(io.BytesIO(content)).convert("RGB")
    assert images.open_stored(stored).tobytes() == original.tobytes()  # lossless


def test_a_large_jpeg_is_resized_once_and_stored_losslessly(
    client: FlaskClient, settings: Settings, storage: Storage
) -> None:
    side = 2 * settings.limits.max_size
    photo = images.noisy_jpeg((side * 2, side))
    job = submit(client, content=photo).get_json()
    stored = storage.get(load_job(settings, job["id"]).input_keys["content"])
    assert images.stored_format(stored) == "WEBP"
    expected = decode_upright(photo, "content", side)  # the one resize, as the check decoded
    assert images.open_stored(stored).tobytes() == expected.tobytes()


# ---- jobs that could only fail ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "fields", "field"),
    [
        (images.png((32, 24)), {"iterations": "5", "max_size": "16"}, "max_size"),
        (images.png((2000, 2)), SMALL, "content"),
        (images.png((300, 3)), {"iterations": "5", "max_size": "128"}, "content"),
    ],
    ids=["max-size-too-small", "a-line", "too-thin"],
)
def test_a_job_that_could_only_fail_is_refused(
    client: FlaskClient,
    settings: Settings,
    storage: Storage,
    content: bytes,
    fields: dict[str, str],
    field: str,
) -> None:
    response = submit(client, content=content, fields=fields)
    assert response.status_code == 422, response.get_json()
    error = error_of(response)
    assert (error["code"], error["field"]) == ("too_small_to_paint", field)
    assert "16 px" in error["message"]
    assert nothing_stored(settings, storage)


def test_the_smallest_paintable_picture_is_taken(client: FlaskClient) -> None:
    ok = submit(client, content=images.png((32, 24)), fields={"iterations": "5", "max_size": "22"})
    assert ok.status_code == 201, ok.get_json()  # 22x16: every side reaches 16 px
    assert (ok.get_json()["width"], ok.get_json()["height"]) == (22, 16)


def test_a_thin_style_is_fine(client: FlaskClient) -> None:
    """The engine enlarges a style image to what the network needs: no refusal there."""
    assert submit(client, styles=[images.png((200, 4))]).status_code == 201
