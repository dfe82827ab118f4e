"""Odd but valid uploads are accepted; stored as sent (JPEG, WebP) or as lossless WebP, they
read as upright 8-bit RGB by the rule the worker reads them with."""

from __future__ import annotations

import pytest

from stylequeue.shared.settings import Settings
from stylequeue.shared.storage import Storage
from tests.web import images
from tests.web.helpers import load_job, submit

ACCEPTED = {
    "cmyk-jpeg": (images.cmyk_jpeg, (40, 30)),
    "png-16bit": (images.png16, (40, 30)),
    "palette": (images.palette_png, (40, 30)),
    "rgba": (images.rgba_png, (40, 30)),
    "greyscale": (images.grey_png, (40, 30)),
    "webp": (images.webp, (48, 32)),
    "exif-rotated": (images.exif_rotated_jpeg, (20, 40)),
}


@pytest.mark.parametrize(("make", "size"), ACCEPTED.values(), ids=ACCEPTED.keys())
def test_accepted_as_upright_rgb(
    client, settings: Settings, storage: Storage, make, size: tuple[int, int]
) -> None:
    data = make()
    response = submit(client, content=data, styles=[data])
    assert response.status_code == 201, response.get_json()
    job = response.get_json()
    assert (job["width"], job["height"]) == size
    row = load_job(settings, job["id"])
    for key in (row.input_keys["content"], row.input_keys["styles"][0]):
        stored = images.open_stored(storage.get(key))
        assert stored.mode == "RGB"
        assert stored.size == size


def test_exif_orientation_is_applied(client, storage: Storage, settings: Settings) -> None:
    response = submit(client, content=images.exif_rotated_jpeg())
    row = load_job(settings, response.get_json()["id"])
    upright = images.open_stored(storage.get(row.input_keys["content"]))
    top = upright.getpixel((10, 5))
    bottom = upright.getpixel((10, 35))
    assert top[0] > 200 and top[2] < 60  # red on top
    assert bottom[2] > 200 and bottom[0] < 60  # blue below


def test_cmyk_becomes_red_rgb(client, storage: Storage, settings: Settings) -> None:
    response = submit(client, content=images.cmyk_jpeg())
    row = load_job(settings, response.get_json()["id"])
    r, g, b = images.open_stored(storage.get(row.input_keys["content"])).getpixel((5, 5))
    assert r > 200 and g < 60 and b < 60


def test_alpha_is_flattened_onto_white(client, storage: Storage, settings: Settings) -> None:
    response = submit(client, content=images.rgba_png())
    row = load_job(settings, response.get_json()["id"])
    r, g, b = images.open_stored(storage.get(row.input_keys["content"])).getpixel((5, 5))
    assert r == 255 and 120 <= g <= 135 and 120 <= b <= 135  # half red over white
