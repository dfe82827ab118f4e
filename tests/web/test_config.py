"""``GET /api/v1/config``: made from the parameter table, and it matches the real validation."""

from __future__ import annotations

import pytest

from stylequeue.shared.params import (
    JOB_PARAMETERS,
    PARAMETERS,
    PRESETS,
    PUBLIC_PARAMETERS,
    WEBHOOK_EVENTS,
    JobOptions,
    ParamError,
    TransferParams,
)
from stylequeue.shared.settings import Limits
from stylequeue.web.config_info import config_payload, parameter_specs
from stylequeue.web.submission import PARAM_FIELDS
from tests.web import images
from tests.web.helpers import SMALL, error_of, submit

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


def test_config_is_made_from_the_parameter_table(client, settings) -> None:
    parameters = client.get("/api/v1/config").get_json()["parameters"]
    assert list(parameters) == list(PUBLIC_PARAMETERS)
    for name, spec in parameters.items():
        param = PARAMETERS[name]
        assert spec["type"] == param.kind, name
        default = list(param.default) if isinstance(param.default, tuple) else param.default
        assert spec["default"] == default, name  # JSON has lists, not tuples
        assert spec.get("note", "") == param.note, name
        listed = param.kind in ("choice", "choice_list")
        assert spec.get("choices", []) == list(param.choices if listed else [])
        assert spec.get("max_length") == (param.high if param.kind == "url" else None)
        if param.kind in ("int", "float", "float_list"):  # numbers: their range
            cap = getattr(settings.limits, param.limit) if param.limit else param.high
            assert (spec["min"], spec["max"]) == (param.low, min(param.high, cap)), name
        else:
            assert "min" not in spec and "max" not in spec, name
    # the server's caps are what lowers a bound: here iterations, snapshots and size
    assert parameters["iterations"]["max"] == parameters["snapshot_every"]["max"] == 200
    assert parameters["max_size"]["max"] == 128


def _accepts(name: str, value: object) -> bool:
    # 128 px (this server's largest): 4 scales start at 16 px, the smallest size allowed
    try:
        TransferParams.from_inputs({"iterations": 5, "max_size": 128, name: value}, limits=LIMITS)
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
    options = {n: values.pop(n) for n in list(values) if n in JOB_PARAMETERS}
    TransferParams.from_inputs(values, limits=LIMITS)
    assert options == {"webhook_events": list(WEBHOOK_EVENTS)}  # no webhook by default
    JobOptions.from_inputs({**options, "webhook": "https://example.org/hook"})


@pytest.mark.parametrize(
    ("extra", "n_styles", "status", "code", "field"),
    [
        ({"iterations": "201"}, 1, 422, "invalid_parameter", "iterations"),
        ({"snapshot_every": "201"}, 1, 422, "invalid_parameter", "snapshot_every"),
        ({"max_size": "129"}, 1, 422, "invalid_parameter", "max_size"),
        ({}, 4, 422, "too_many_files", "style"),  # counted before the parameters
    ],
)
def test_submit_applies_this_servers_limits(
    client, extra: dict, n_styles: int, status: int, code: str, field: str
) -> None:
    """Valid anywhere, but over this server's caps (the advertised max): a 4xx naming it."""
    fields = {**SMALL, **extra}
    TransferParams.from_inputs(fields, n_styles=n_styles)  # valid without the server's caps
    response = submit(client, fields=fields, styles=[images.jpeg()] * n_styles)
    assert response.status_code == status, response.get_json()
    error = error_of(response)
    assert (error["code"], error["field"]) == (code, field)
    assert "this server" in error["message"] or code == "too_many_files"


@pytest.mark.parametrize(
    "limits",
    [LIMITS, Limits(), Limits(max_size=512, max_iterations=1000), Limits(max_iterations=5)],
)
def test_within_limits_is_what_a_submit_allows(limits: Limits) -> None:
    for preset in config_payload(limits)["presets"]:
        params = PRESETS[preset["name"]]
        try:
            params.check_limits(limits)
            allowed = True
        except ParamError:
            allowed = False
        assert preset["within_limits"] is allowed, preset["name"]


def test_within_limits_applies_every_capped_parameter(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every row the server caps counts (snapshot_every is capped by max_iterations too),
    not only iterations and max_size."""
    from stylequeue.web import config_info

    odd = TransferParams(iterations=100, max_size=64, snapshot_every=300)
    monkeypatch.setattr(config_info, "PRESETS", {"odd": odd})
    (preset,) = config_payload(LIMITS)["presets"]
    assert preset["within_limits"] is False
