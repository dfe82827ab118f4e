"""``?thumb=<px>`` on the image endpoints: small WebPs for the list, the strip and the inputs."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from stylequeue.shared import keys
from stylequeue.shared.settings import Settings
from stylequeue.shared.states import utcnow
from stylequeue.shared.storage import Storage
from stylequeue.web import create_app, media
from tests.web import images
from tests.web.helpers import ALICE, BOB, error_of, submit, with_settings
from tests.web.helpers import update_job as update


def open_webp(data: bytes) -> Image.Image:
    img = Image.open(io.BytesIO(data))
    assert img.format == "WEBP"
    return img


def finished_with_result(client, settings: Settings, storage: Storage, size=(300, 120)) -> str:  # type: ignore[no-untyped-def]
    job_id = submit(client).get_json()["id"]
    storage.put(keys.result_key(job_id, attempt=0), images.png(size, "red"), "image/png")
    storage.put(keys.snapshot_key(job_id, 5, attempt=0), images.png(size, "blue"), "image/png")
    update(settings, job_id, status="succeeded", started_at=utcnow(), finished_at=utcnow(),
           result_key=keys.result_key(job_id, attempt=0), snapshot_iterations=[5])  # fmt: skip
    return job_id


@pytest.mark.parametrize(
    ("px", "wide_size", "tall_size"),
    [(96, (96, 48), (24, 96)), (160, (160, 80), (40, 160)), (320, (240, 120), (60, 240))],
)
def test_each_size_fits_the_longer_side_and_keeps_the_aspect(
    client, px: int, wide_size: tuple[int, int], tall_size: tuple[int, int]
) -> None:
    # inputs are stored at most 2 x max_size (256 px here): 320 is larger than both
    landscape, portrait = images.png((240, 120), "red"), images.jpeg((60, 240))
    job_id = submit(client, content=landscape, styles=[portrait]).get_json()["id"]
    base = f"/api/v1/jobs/{job_id}/inputs"
    wide = client.get(f"{base}/content?thumb={px}", headers=ALICE)
    assert wide.status_code == 200 and wide.mimetype == "image/webp"
    assert open_webp(wide.data).size == wide_size
    tall = client.get(f"{base}/style/0?thumb={px}", headers=ALICE)
    assert open_webp(tall.data).size == tall_size
    assert len(wide.data) < len(landscape)


def test_never_upscaled(client) -> None:
    job_id = submit(client, content=images.png((48, 32))).get_json()["id"]
    response = client.get(f"/api/v1/jobs/{job_id}/inputs/content?thumb=320", headers=ALICE)
    assert response.status_code == 200 and open_webp(response.data).size == (48, 32)


@pytest.mark.parametrize("value", ["", "100", "abc", "-1", "160.0", "0160", "1600", "160px"])
@pytest.mark.parametrize(
    "path", ["result", "snapshots/5", "inputs/content", "inputs/style/0"]
)  # fmt: skip
def test_other_sizes_are_400_naming_thumb(
    client, settings: Settings, storage: Storage, value: str, path: str
) -> None:
    job_id = finished_with_result(client, settings, storage)
    response = client.get(f"/api/v1/jobs/{job_id}/{path}?thumb={value}", headers=ALICE)
    assert response.status_code == 400
    error = error_of(response)
    assert error["field"] == "thumb" and error["code"] == "invalid_parameter"
    assert "96, 160, 320" in error["message"]


def test_result_and_snapshot_thumbs_of_a_finished_job(
    client, settings: Settings, storage: Storage
) -> None:
    job_id = finished_with_result(client, settings, storage)
    for path in ("result", "snapshots/5"):
        url = f"/api/v1/jobs/{job_id}/{path}"
        full = client.get(url, headers=ALICE)
        thumb = client.get(f"{url}?thumb=96", headers=ALICE)
        assert thumb.status_code == 200 and thumb.mimetype == "image/webp"
        assert open_webp(thumb.data).size == (96, 38)  # 300x120 -> 96x38.4
        assert "immutable" in thumb.headers["Cache-Control"]
        assert "private" in thumb.headers["Cache-Control"]
        assert thumb.headers["ETag"] != full.headers["ETag"]
        bigger = client.get(f"{url}?thumb=160", headers=ALICE)
        assert bigger.headers["ETag"] not in (thumb.headers["ETag"], full.headers["ETag"])
        cached = client.get(
            f"{url}?thumb=96", headers={**ALICE, "If-None-Match": thumb.headers["ETag"]}
        )
        assert cached.status_code == 304 and cached.data == b""
    # a thumbnail is never an attachment
    assert (
        "Content-Disposition"
        not in client.get(
            f"/api/v1/jobs/{job_id}/result?thumb=96&download=1", headers=ALICE
        ).headers
    )
    job = client.get(f"/api/v1/jobs/{job_id}", headers=ALICE).get_json()
    assert job["links"]["thumbnail"] == f"/api/v1/jobs/{job_id}/result?thumb=160"
    assert client.get(job["links"]["thumbnail"], headers=ALICE).mimetype == "image/webp"


def test_running_snapshot_thumb_revalidates_without_decoding(
    client, settings: Settings, storage: Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    job_id = submit(client).get_json()["id"]
    storage.put(keys.snapshot_key(job_id, 10, attempt=0), images.png((64, 64), "blue"), "image/png")
    update(settings, job_id, status="running", started_at=utcnow(), snapshot_iterations=[10])
    url = f"/api/v1/jobs/{job_id}/snapshots/10?thumb=160"
    first = client.get(url, headers=ALICE)
    assert first.status_code == 200 and "no-cache" in first.headers["Cache-Control"]
    assert client.get(url, headers=ALICE).headers["ETag"] == first.headers["ETag"]
    assert not storage.list(f"{keys.job_prefix(job_id)}thumbs/")  # may change: not kept

    def no_decoding(*args: object) -> bytes:
        raise AssertionError("a revalidation decoded the image")

    monkeypatch.setattr(media, "make_thumbnail", no_decoding)
    again = client.get(url, headers={**ALICE, "If-None-Match": first.headers["ETag"]})
    assert again.status_code == 304
    monkeypatch.undo()

    # a restarted run rewrites the snapshot: a new ETag, a new picture
    storage.put(keys.snapshot_key(job_id, 10, attempt=0), images.png((64, 64), "red"), "image/png")
    fresh = client.get(url, headers={**ALICE, "If-None-Match": first.headers["ETag"]})
    assert fresh.status_code == 200 and fresh.headers["ETag"] != first.headers["ETag"]
    assert open_webp(fresh.data).convert("RGB").getpixel((32, 32))[0] > 200

    listing = client.get(f"/api/v1/jobs/{job_id}/snapshots", headers=ALICE).get_json()
    assert listing["snapshots"][0]["thumb_url"] == url


def test_thumbs_of_immutable_sources_are_kept_and_reused(
    client, settings: Settings, storage: Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    job_id = finished_with_result(client, settings, storage)
    prefix = f"{keys.job_prefix(job_id)}thumbs/"
    paths = ["result", "snapshots/5", "inputs/content", "inputs/style/0"]
    first = {p: client.get(f"/api/v1/jobs/{job_id}/{p}?thumb=160", headers=ALICE) for p in paths}
    assert storage.list(prefix) == sorted(
        f"{prefix}{name}-160.thumb" for name in ("result", "snapshot-000005", "content", "style-0")
    )

    def no_decoding(*args: object) -> bytes:
        raise AssertionError("a kept thumbnail was made again")

    monkeypatch.setattr(media, "make_thumbnail", no_decoding)
    for path, before in first.items():
        again = client.get(f"/api/v1/jobs/{job_id}/{path}?thumb=160", headers=ALICE)
        assert again.status_code == 200 and again.mimetype == "image/webp"
        assert again.data == before.data and again.headers["ETag"] == before.headers["ETag"]
        assert "immutable" in again.headers["Cache-Control"]
        not_modified = client.get(
            f"/api/v1/jobs/{job_id}/{path}?thumb=160",
            headers={**ALICE, "If-None-Match": before.headers["ETag"]},
        )
        assert not_modified.status_code == 304


def test_a_broken_cache_entry_is_made_again(client, settings: Settings, storage: Storage) -> None:
    job_id = finished_with_result(client, settings, storage)
    storage.put(media.thumb_key(job_id, "result", 96), b"garbage")
    response = client.get(f"/api/v1/jobs/{job_id}/result?thumb=96", headers=ALICE)
    assert response.status_code == 200 and open_webp(response.data).size == (96, 38)
    assert storage.get(media.thumb_key(job_id, "result", 96)).endswith(response.data)


def test_another_owner_gets_404(client, settings: Settings, storage: Storage) -> None:
    job_id = finished_with_result(client, settings, storage)
    for path in ("result", "snapshots/5", "inputs/content", "inputs/style/0"):
        url = f"/api/v1/jobs/{job_id}/{path}?thumb=160"
        assert client.get(url, headers=ALICE).status_code == 200  # kept now
        response = client.get(url, headers=BOB)
        assert response.status_code == 404 and error_of(response)["code"] == "job_not_found"
        assert client.get(url).status_code == 404  # no session at all


def test_missing_sources_keep_their_404s(client, settings: Settings) -> None:
    job_id = submit(client).get_json()["id"]
    base = f"/api/v1/jobs/{job_id}"
    assert error_of(client.get(f"{base}/result?thumb=96", headers=ALICE))["code"] == (
        "result_not_ready"
    )
    assert error_of(client.get(f"{base}/snapshots/7?thumb=96", headers=ALICE))["code"] == (
        "snapshot_not_found"
    )
    assert error_of(client.get(f"{base}/inputs/style/3?thumb=96", headers=ALICE))["code"] == (
        "input_not_found"
    )


def test_sources_over_the_pixel_limit_are_not_decoded(client, settings: Settings) -> None:
    job_id = submit(client, content=images.png((400, 200))).get_json()["id"]
    strict = create_app(with_settings(settings, max_image_pixels=10_000)).test_client()
    response = strict.get(f"/api/v1/jobs/{job_id}/inputs/content?thumb=96", headers=ALICE)
    assert response.status_code == 422 and error_of(response)["code"] == "too_many_pixels"
    # the full image is still served: it needs no decoding
    assert strict.get(f"/api/v1/jobs/{job_id}/inputs/content", headers=ALICE).status_code == 200
