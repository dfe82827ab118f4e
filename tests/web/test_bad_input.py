"""Bad input gets a clear 4xx naming the field, and leaves no row and no stored object."""

from __future__ import annotations

import io
from typing import Any

import pytest

from stylequeue.shared.settings import Settings
from stylequeue.shared.storage import Storage
from stylequeue.web import create_app
from tests.web import images
from tests.web.helpers import ALICE, SMALL, count_jobs, error_of, submit, with_settings


@pytest.fixture
def nothing_stored(settings: Settings, storage: Storage):  # type: ignore[no-untyped-def]
    """After the test: no job row, no object."""
    yield
    assert count_jobs(settings) == 0
    assert storage.list("jobs/") == []


def fields(**extra: str) -> dict[str, str]:
    return {**SMALL, **extra}


BAD_IMAGES: list[tuple[str, dict[str, Any], int, str, str]] = [
    # id, submit kwargs, status, code, field
    ("text", {"content": b"hello, world\n", "content_name": "notes.txt"}, 415,
     "unsupported_type", "content"),
    ("text-renamed-png", {"content": b"just text, honest", "content_name": "photo.png"}, 415,
     "unsupported_type", "content"),
    ("gif", {"content": images.encode(images.Image.new("RGB", (8, 8)), "GIF")}, 415,
     "unsupported_type", "content"),
    ("truncated-png", {"content": images.truncated(images.noisy_png())}, 422,
     "corrupt_image", "content"),
    ("truncated-jpeg", {"styles": [images.truncated(images.noisy_jpeg())]}, 422,
     "corrupt_image", "style"),
    ("bomb-header", {"content": images.png_bomb()}, 413, "too_many_pixels", "content"),
    ("zero-bytes", {"content": b""}, 422, "empty_file", "content"),
    ("zero-byte-style", {"styles": [b""]}, 422, "empty_file", "style"),
    ("second-style-bad", {"styles": [images.jpeg(), b"GIF89a nope"]}, 415,
     "unsupported_type", "style"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("kwargs", "status", "code", "field"),
    [case[1:] for case in BAD_IMAGES],
    ids=[case[0] for case in BAD_IMAGES],
)
def test_bad_images(client, nothing_stored, kwargs, status, code, field) -> None:
    response = submit(client, **kwargs)
    assert response.status_code == status, response.get_json()
    error = error_of(response)
    assert (error["code"], error["field"]) == (code, field)


def test_too_many_pixels_for_the_configured_limit(settings: Settings, nothing_stored) -> None:
    client = create_app(with_settings(settings, max_image_pixels=100)).test_client()
    response = submit(client, content=images.png((20, 20)))
    assert response.status_code == 413
    assert error_of(response)["field"] == "content"


def test_oversize_request(client, nothing_stored) -> None:
    big = images.noisy_png((1000, 1000))  # ~3 MB, limit 2 MB
    response = submit(client, content=big)
    assert response.status_code == 413
    assert error_of(response)["code"] == "too_large"


BAD_PARAMS = [
    ("iterations", "nan"),
    ("iterations", "NaN"),
    ("iterations", "-5"),
    ("iterations", "0"),
    ("iterations", "1000000000"),
    ("iterations", "2.5"),
    ("iterations", "lots"),
    ("max_size", "nan"),
    ("max_size", "-64"),
    ("max_size", "8"),
    ("max_size", "100000"),
    ("content_weight", "nan"),
    ("content_weight", "inf"),
    ("style_weight", "-1"),
    ("tv_weight", "1e400"),
    ("learning_rate", "0"),
    ("seed", "-1"),
    ("snapshot_every", "-1"),
    ("preserve_colors", "maybe"),
    ("weights", "resnet"),
    ("weights", "/etc/weights.h5"),
    ("style_scale", "100"),
    ("style_blend", "1,2"),
    ("init", "zeros"),
    ("preset", "turbo"),
    ("optimizer", "sgd"),
    ("scales", "0"),
    ("scales", "5"),
    ("scales", "1.5"),
]


@pytest.mark.parametrize(("name", "value"), BAD_PARAMS, ids=[f"{n}={v}" for n, v in BAD_PARAMS])
def test_bad_parameters(client, nothing_stored, name: str, value: str) -> None:
    response = submit(client, fields=fields(**{name: value}))
    assert response.status_code == 422, response.get_json()
    error = error_of(response)
    assert error["field"] == name
    assert error["code"] == "invalid_parameter"


def test_more_scales_than_iterations(client, nothing_stored) -> None:
    """Each coarse-to-fine scale needs an iteration: the 422 names ``scales``."""
    response = submit(client, fields=fields(iterations="2", scales="3"))
    assert response.status_code == 422, response.get_json()
    error = error_of(response)
    assert (error["code"], error["field"]) == ("invalid_parameter", "scales")
    assert "3 scales need at least 3 iterations" in error["message"]


@pytest.mark.parametrize(
    "name", ["colour", "precision", "beta_1", "content_layers", "lbfgs_history"]
)
def test_unknown_parameters(client, nothing_stored, name: str) -> None:
    response = submit(client, fields=fields(**{name: "1"}))
    assert response.status_code == 400
    error = error_of(response)
    assert (error["code"], error["field"]) == ("unknown_parameter", name)


def test_parameter_given_twice(client, nothing_stored) -> None:
    response = client.post(
        "/api/v1/jobs",
        headers=ALICE,
        data={
            "iterations": ["5", "6"],
            "max_size": "64",
            "content": (io.BytesIO(images.png()), "c.png"),
            "style": (io.BytesIO(images.png()), "s.png"),
        },
    )
    assert response.status_code == 400
    assert error_of(response)["field"] == "iterations"


def test_missing_content(client, nothing_stored) -> None:
    response = submit(client, no_content=True)
    assert response.status_code == 400
    error = error_of(response)
    assert (error["code"], error["field"]) == ("missing_file", "content")


def test_missing_style(client, nothing_stored) -> None:
    response = submit(client, no_style=True)
    assert response.status_code == 400
    assert error_of(response)["field"] == "style"


def test_empty_file_input_from_a_browser_counts_as_missing(client, nothing_stored) -> None:
    # A form with an untouched file input sends a part with no filename and no bytes.
    response = client.post(
        "/api/v1/jobs",
        headers=ALICE,
        data={**SMALL, "content": (io.BytesIO(b""), ""), "style": (io.BytesIO(images.png()), "s")},
    )
    assert response.status_code == 400
    assert error_of(response)["field"] == "content"


def test_too_many_styles(client, nothing_stored) -> None:
    response = submit(client, styles=[images.png()] * 4)  # test limit: 3
    assert response.status_code == 422
    assert error_of(response)["field"] == "style"


def test_two_content_images(client, nothing_stored) -> None:
    response = client.post(
        "/api/v1/jobs",
        headers=ALICE,
        data={
            **SMALL,
            "content": [(io.BytesIO(images.png()), "a.png"), (io.BytesIO(images.png()), "b.png")],
            "style": (io.BytesIO(images.png()), "s.png"),
        },
    )
    assert response.status_code == 400
    assert error_of(response)["field"] == "content"


def test_file_fields_sent_as_text(client, nothing_stored) -> None:
    response = client.post(
        "/api/v1/jobs",
        headers=ALICE,
        data={**SMALL, "content": (io.BytesIO(images.png()), "c.png"), "style": "starry-night"},
        content_type="multipart/form-data",
    )
    assert response.status_code == 400
    error = error_of(response)
    assert (error["code"], error["field"]) == ("not_a_file", "style")


def test_unknown_file_part(client, nothing_stored) -> None:
    response = client.post(
        "/api/v1/jobs",
        headers=ALICE,
        data={
            **SMALL,
            "content": (io.BytesIO(images.png()), "c.png"),
            "style": (io.BytesIO(images.png()), "s.png"),
            "mask": (io.BytesIO(images.png()), "m.png"),
        },
    )
    assert response.status_code == 400
    assert error_of(response)["field"] == "mask"


def test_json_body_is_refused(client, nothing_stored) -> None:
    response = client.post("/api/v1/jobs", headers=ALICE, json={"iterations": 5})
    assert response.status_code == 415
    assert error_of(response)["code"] == "unsupported_media_type"
