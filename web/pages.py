"""HTML pages. For now a placeholder index; the pages issue replaces this module.

It shows the one thing pages need from the job system: templates get ``csrf_token()``
(from :func:`web.auth.template_context`) to put in a <meta> tag for their fetch calls.
"""

from __future__ import annotations

from flask import Blueprint, render_template_string

bp = Blueprint("pages", __name__)

INDEX = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="csrf-token" content="{{ csrf_token() }}">
<title>stylequeue</title>
</head>
<body>
<h1>stylequeue</h1>
<p>Neural style transfer as a service. The web pages are coming; the JSON API is at
<a href="{{ url_for('api.get_config') }}">/api/v1/</a>.</p>
</body>
</html>
"""


@bp.get("/")
def index() -> str:
    return render_template_string(INDEX)
