"""The submission form (``GET /``) is made from the parameter table: every input's label,
min, max, step, value and hint is the table's, with this server's limits applied."""

from __future__ import annotations

import json
from html.parser import HTMLParser
from typing import Any

from stylequeue.shared.params import PARAMETERS, PRESETS, PUBLIC_PARAMETERS
from stylequeue.shared.settings import Limits

# Public parameters the form does not offer as a field: the preset is the radio row above
# the fields; a blend needs several style images and the start image is for experiments.
NOT_ON_THE_FORM = {"preset", "style_blend", "init", "webhook", "webhook_events"}  # API only


class _Form(HTMLParser):
    """The controls of #job-form by name, their <label> texts and their hints by id."""

    def __init__(self) -> None:
        super().__init__()
        self.controls: dict[str, list[dict[str, Any]]] = {}
        self.labels: dict[str, str] = {}
        self.texts: dict[str, str] = {}
        self.config: Any = None
        self._text_of: list[tuple[str, str]] = []  # (kind, key) of open elements we read
        self._select: dict[str, Any] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag in ("input", "select") and a.get("name"):
            control = {"tag": tag, **a, "options": []}
            self.controls.setdefault(a["name"], []).append(control)
            self._select = control if tag == "select" else self._select
        elif tag == "option" and self._select is not None:
            self._select["options"].append({**a, "value": a.get("value", ""), "label": ""})
            self._text_of.append(("option", ""))
        elif tag == "label" and a.get("for"):
            self._text_of.append(("label", a["for"]))
        elif tag == "span" and a.get("id", "").endswith("-hint"):
            self._text_of.append(("text", a["id"]))
        elif tag == "script" and a.get("id") == "page-config":
            self._text_of.append(("config", ""))

    def handle_endtag(self, tag: str) -> None:
        if tag == "select":
            self._select = None
        if self._text_of and tag in ("option", "label", "span", "script"):
            self._text_of.pop()

    def handle_data(self, data: str) -> None:
        if not self._text_of:
            return
        kind, key = self._text_of[-1]
        if kind == "option" and self._select is not None:
            self._select["options"][-1]["label"] += data
        elif kind == "label":
            self.labels[key] = self.labels.get(key, "") + data
        elif kind == "text":
            self.texts[key] = self.texts.get(key, "") + data
        elif kind == "config":
            self.config = json.loads(data)


def _render(client) -> _Form:  # type: ignore[no-untyped-def]
    response = client.get("/")
    assert response.status_code == 200
    form = _Form()
    form.feed(response.get_data(as_text=True))
    return form


def _form_default(name: str, preset: str, limits: Limits) -> Any:
    """What the form starts with: the checked preset's value, capped to the server."""
    value = getattr(PRESETS[preset], name)
    cap = PARAMETERS[name].high_within(limits)
    if PARAMETERS[name].limit is not None and cap is not None:
        value = min(value, cap)
    if name == "snapshot_every":
        value = min(value, _form_default("iterations", preset, limits))
    return value


def test_every_input_is_the_tables(client, settings) -> None:
    limits = settings.limits
    form = _render(client)
    preset = next(c["value"] for c in form.controls["preset"] if "checked" in c)
    shown = set(form.controls) & set(PARAMETERS)
    assert shown == set(PUBLIC_PARAMETERS) - NOT_ON_THE_FORM | {"preset"}
    for name in shown - {"preset"}:
        param = PARAMETERS[name]
        (control,) = form.controls[name]
        assert form.labels[name].strip() == param.label, name
        assert form.texts[f"{name}-hint"].strip() == param.hint_for(limits), name
        default = _form_default(name, preset, limits)
        if param.kind in ("int", "float"):
            assert control["type"] == "number", name
            assert float(control["min"]) == param.low, name
            assert float(control["max"]) == param.high_within(limits), name
            assert control["step"] == ("1" if param.kind == "int" else "any"), name
            assert control["data-kind"] == param.kind, name
            assert float(control["value"]) == default, name
        elif param.kind == "bool":
            assert control["type"] == "checkbox", name
            assert ("checked" in control) == default, name
        else:
            assert param.kind == "choice" and control["tag"] == "select", name
            options = [(o["value"], o["label"].strip()) for o in control["options"]]
            expected = list(zip(param.choices, param.choice_labels, strict=True))
            if param.null_label:
                expected.insert(0, ("", param.null_label))
            assert options == expected, name
            selected = [o["value"] for o in control["options"] if "selected" in o]
            assert selected == ([] if default is None else [default]), name


def test_this_servers_limits_cap_the_form(client, settings) -> None:
    assert (settings.limits.max_size, settings.limits.max_iterations) == (128, 200)
    form = _render(client)
    assert form.controls["iterations"][0]["max"] == "200"
    assert form.controls["max_size"][0]["max"] == "128"
    assert form.controls["snapshot_every"][0]["max"] == "200"
    assert form.texts["iterations-hint"].strip().endswith("1 to 200.")
    assert form.texts["max_size-hint"].strip().startswith("16 to 128.")


def test_the_form_presets_are_the_tables(client, settings) -> None:
    """The values a preset button puts in the fields (page config) are the table's presets,
    capped to this server, for every field the form shows."""
    form = _render(client)
    offered = [c["value"] for c in form.controls["preset"]]
    assert set(form.config["presets"]) == set(offered)
    fields = {n for n in form.controls if n in PARAMETERS and PARAMETERS[n].kind != "choice"}
    for preset, values in form.config["presets"].items():
        assert set(values) == fields
        for name, value in values.items():
            assert value == _form_default(name, preset, settings.limits), (preset, name)
