"""The parameter table as JSON Schema, for the OpenAPI document (``web/openapi.py``).

Made from ``shared.params.PARAMETERS`` and this server's Limits, like ``GET /api/v1/config``
(``web/config_info.py``) and the form (``web/form_spec.py``): a range is written here by no
one, so the document cannot drift from what a submit accepts. Two shapes:

- :func:`submission_schema`: ``POST /api/v1/jobs``'s multipart body, field by field, as sent
  (the form's strings; an empty field means the default), plus the two file fields;
- :func:`stored_params_schema`: the ``params`` object of the job JSON (every parameter,
  engine internals too, as the job recorded it; no server limits, which may change later).
"""

from __future__ import annotations

from typing import Any

from stylequeue.shared.bounds import MAX_STYLES
from stylequeue.shared.images import ALLOWED_FORMATS
from stylequeue.shared.params import (
    PARAMETERS,
    PUBLIC_PARAMETERS,
    TRANSFER_PARAMETERS,
    Param,
    fmt,
)
from stylequeue.shared.settings import Limits
from stylequeue.shared.text import FALSE_WORDS, TRUE_WORDS

CONTENT_FIELD = "content"  # web/submission.py reads the same names
STYLE_FIELD = "style"
CSRF_FIELD = "csrf_token"
# A float list on a form: "0.7,0.3" (one number per style image), or empty (equal weights).
_NUMBER = r"\s*(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?\s*"
FLOAT_LIST_PATTERN = rf"^({_NUMBER}(,{_NUMBER})*)?$"
IMAGE_TYPES = ", ".join(ALLOWED_FORMATS.values())
# A URL on a form: the scheme's letters in either case, no white space inside (what the
# table's ``url`` check refuses first; whether this server may call it is decided at submit).
_WHITE = r"[\s\S]"  # any character, line breaks too


def _url_pattern(schemes: tuple[str, ...]) -> str:
    either_case = "|".join("".join(f"[{c.lower()}{c.upper()}]" for c in s) for s in schemes)
    return rf"^\s*({either_case})://\S+\s*$"


def _choice_list_pattern(choices: tuple[str, ...]) -> str:
    """Some of ``choices``, comma-separated, each at most once (empty items and spaces
    around items are dropped, as the table's coercion does)."""
    one = "(" + "|".join(choices) + ")"
    once = rf"(?!{_WHITE}*\b{one}\b{_WHITE}*\b\1\b)"
    return rf"^{once}[\s,]*{one}(\s*,[\s,]*{one})*[\s,]*$"


def _range(param: Param, limits: Limits | None) -> dict[str, Any]:
    high = param.high_within(limits)
    out: dict[str, Any] = {}
    if param.low is not None:
        out["minimum"] = param.low
    if high is not None:
        out["maximum"] = high
    return out


def _number(param: Param, limits: Limits | None) -> dict[str, Any]:
    kind = "integer" if param.kind == "int" else "number"  # float_list, layers: numbers
    return {"type": kind, **_range(param, limits)}


def _describe(param: Param, limits: Limits | None) -> str:
    text = param.label
    hint = param.hint_for(limits)
    if hint:
        text = f"{text}. {hint}" if text else hint
    if param.note:
        text = f"{text} ({param.note})"
    return text


def form_field_schema(param: Param, limits: Limits) -> dict[str, Any]:
    """One multipart field of a submit, with this server's range. Every field may also be
    sent empty, which means the default (``TransferParams.from_inputs`` skips it)."""
    schema: dict[str, Any]
    description = _describe(param, limits)
    if param.kind in ("int", "float"):
        schema = {"anyOf": [_number(param, limits), {"const": ""}]}
    elif param.kind == "bool":
        schema = {"type": "string", "enum": ["", *TRUE_WORDS, *FALSE_WORDS]}
    elif param.kind == "choice":
        schema = {"type": "string", "enum": ["", *param.choices]}
    elif param.kind == "float_list":
        low, cap = fmt(param.low), fmt(param.high_within(limits))
        schema = {"type": "string", "pattern": FLOAT_LIST_PATTERN}
        description += f"; comma-separated numbers, each from {low} to {cap}"
    elif param.kind == "url":
        url = {
            "type": "string",
            "maxLength": param.high,
            "pattern": _url_pattern(param.choices),
        }
        example = f"{param.choices[0]}://hooks.example.com/stylequeue"
        schema = {"anyOf": [url, {"const": ""}], "examples": [example]}
        description += (
            f"; an {' or '.join(param.choices)} URL, at most {fmt(param.high)} characters"
        )
    elif param.kind == "choice_list":
        events = {
            "type": "string",
            "pattern": _choice_list_pattern(param.choices),
        }
        schema = {"anyOf": [events, {"const": ""}], "examples": [",".join(param.choices[::2])]}
        description += "; each at most once"
    else:  # not public: never a form field
        raise ValueError(f"{param.name}: a {param.kind} parameter is not a form field")
    empty = param.null_label or "the default"
    schema["description"] = f"{description} (empty: {empty[0].lower()}{empty[1:]})"
    if _has_default(param, limits):
        schema["default"] = _default(param)
    return schema


def _has_default(param: Param, limits: Limits) -> bool:
    """The "default" preset's value, unless this server's caps are below it."""
    if param.default is None:
        return bool(param.null_label)
    high = param.high_within(limits)
    return not (param.kind in ("int", "float") and high is not None and param.default > high)


def _default(param: Param) -> Any:
    """The default as a form sends it ("" where an empty field means the null_label's)."""
    if param.default is None:
        return ""
    if param.kind == "bool":
        return "true" if param.default else "false"
    if isinstance(param.default, tuple):  # a choice_list: comma-separated
        return ",".join(param.default)
    return param.default


def submission_schema(limits: Limits) -> dict[str, Any]:
    """``POST /api/v1/jobs``: the files and every public parameter, nothing else."""
    properties: dict[str, Any] = {
        CONTENT_FIELD: {
            "type": "string",
            "format": "binary",
            "description": f"the photo to paint ({IMAGE_TYPES}, checked by content)",
        },
        STYLE_FIELD: {
            "type": "array",
            "items": {"type": "string", "format": "binary"},
            "minItems": 1,
            "maxItems": min(limits.max_styles, MAX_STYLES),
            "description": "the painting(s) to imitate, one part each; several are blended",
        },
    }
    for name in PUBLIC_PARAMETERS:
        properties[name] = form_field_schema(PARAMETERS[name], limits)
    properties[CSRF_FIELD] = {
        "type": "string",
        "description": "the session's CSRF token, instead of the X-CSRF-Token header",
    }
    return {
        "type": "object",
        "required": [CONTENT_FIELD, STYLE_FIELD],
        "properties": properties,
        "additionalProperties": False,
    }


def submission_encoding() -> dict[str, Any]:
    """The file parts: their content types (the server decodes by content, not by name or
    type) and a file name, which makes a part a file (a part without one is a text field:
    a 400 naming it)."""
    return {
        name: {
            "contentType": IMAGE_TYPES,
            "headers": {
                "Content-Disposition": {
                    "description": "a file part: form-data with a filename",
                    "required": True,
                    "schema": {"type": "string"},
                    "example": f'form-data; name="{name}"; filename="{name}.png"',
                }
            },
        }
        for name in (CONTENT_FIELD, STYLE_FIELD)
    }


def stored_value_schema(param: Param) -> dict[str, Any]:
    """A parameter's value in the job JSON's ``params`` (intrinsic ranges only)."""
    nullable = bool(param.null_label)
    schema: dict[str, Any]
    if param.kind in ("int", "float"):
        schema = _number(param, None)
    elif param.kind == "bool":
        schema = {"type": "boolean"}
    elif param.kind == "choice":
        # a weights file path is allowed where paths are (the CLI), so no enum there
        schema = {"type": "string"} if param.path_suffixes else {"enum": list(param.choices)}
    elif param.kind == "float_list":
        schema = {"type": "array", "items": {"type": "number", **_range(param, None)}}
    else:  # layers: [[name, weight], ...] (a pair's two kinds, not prefixItems: see below)
        schema = {
            "type": "array",
            "items": {
                "type": "array",
                # prefixItems would say which is which, but Schemathesis turns it into a
                # draft-4 tuple it then refuses; anyOf says as much for a reader
                "items": {"anyOf": [{"enum": list(param.choices)}, _number(param, None)]},
                "minItems": 2,
                "maxItems": 2,
            },
        }
    if nullable:
        schema = {"anyOf": [schema, {"type": "null"}]}
    return {**schema, "description": param.label}


def stored_params_schema() -> dict[str, Any]:
    """The job JSON's ``params``: every row of the transfer's part of the table (older jobs
    may lack newer rows); the job options (the webhook) are keys of the job itself."""
    return {
        "type": "object",
        "properties": {name: stored_value_schema(p) for name, p in TRANSFER_PARAMETERS.items()},
    }
