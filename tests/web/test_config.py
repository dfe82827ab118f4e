"""``GET /api/v1/config``: what the pages mirror, and that it matches the real validation."""

from __future__ import annotations

import pytest

from stylequeue.shared.params import ParamError, TransferParams
from stylequeue.shared.settings import Limits
from stylequeue.web.config_info import config_payload, parameter_specs
from stylequeue.web.submission import PARAM_FIELDS

LIMITS = Limits(max_size=128, max_iterations=200, max_styles=3)


def test_config_endpoint(client, settings) -> None:
    body = client.get("/api/v1/config").get_json()
    assert body["limits"] == {
        "max_upload_bytes": settings.limits.max_upload_bytes,
        "max_image_pixels": settings.limits.max_image_pixels,
        "max_size": 128,
        "max_iterations": 200,
        "max_styles": 3,
        "max_active_jobs": settings.limits.max_active_jobs,
    }
    assert body["formats"] == ["image/png", "image/jpeg", "image/webp"]
    presets = {p["name"]: p for p in body["presets"]}
    assert presets["quick"] == {"name": "quick", "iterations": 100, "max_size": 256,
                                "snapshot_every": 10, "within_limits": False}  # fmt: skip
    assert list(body["parameters"]) == list(PARAM_FIELDS)


def _accepts(name: str, value: object) -> bool:
    try:
        TransferParams.from_inputs({"iterations": 5, "max_size": 64, name: value}, limits=LIMITS)
        return True
    except ParamError as exc:
        assert exc.field == name
        return False


@pytest.mark.parametrize(
    ("name", "spec"),
    [(n, s) for n, s in parameter_specs(LIMITS).items() if s["type"] in ("int", "float")],
)
def test_advertised_ranges_match_validation(name: str, spec: dict) -> None:
    low, high = spec["min"], spec["max"]
    assert _accepts(name, low) and _accepts(name, high)
    if spec["type"] == "int":
        below, above = low - 1, high + 1
    else:
        below, above = low - max(low, 1e-9) / 2, high * 1.001
    assert not _accepts(name, below) and not _accepts(name, above)


def test_advertised_choices_match_validation() -> None:
    for name, spec in parameter_specs(LIMITS).items():
        if spec["type"] == "choice" and name != "preset":
            for choice in spec["choices"]:
                assert _accepts(name, choice), (name, choice)
            assert not _accepts(name, "something-else")


def test_defaults_are_valid() -> None:
    payload = config_payload(LIMITS)
    values = {n: s["default"] for n, s in payload["parameters"].items() if s["default"] is not None}
    values.update(iterations=5, max_size=64)
    TransferParams.from_inputs(values, limits=LIMITS)
