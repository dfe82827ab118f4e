"""Static files get URLs with their content hash; hashed URLs are cached for a year."""

from __future__ import annotations

import hashlib
from urllib.parse import parse_qs, urlsplit

from stylequeue.web.static_assets import STATIC_DIR, asset, import_map


def test_asset_urls_carry_the_content_hash(app) -> None:
    with app.test_request_context():
        url = asset("js/form.js")
        missing = asset("js/no-such-file.js")
        imports = import_map()["imports"]
    digest = hashlib.sha256((STATIC_DIR / "js/form.js").read_bytes()).hexdigest()[:10]
    assert urlsplit(url).path == "/assets/js/form.js"
    assert parse_qs(urlsplit(url).query) == {"v": [digest]}
    assert "v=" not in missing
    assert set(imports) == {"/assets/js/common.js", "/assets/js/chart.js"}
    assert all("?v=" in target for target in imports.values())


def test_hashed_urls_are_cached_for_a_year_others_revalidate(client) -> None:
    with client.application.test_request_context():
        url = asset("js/form.js")
    with client.get(url) as hashed, client.get("/assets/js/form.js") as plain:
        assert hashed.status_code == plain.status_code == 200
        assert "max-age=31536000" in hashed.headers["Cache-Control"]
        assert "max-age=31536000" not in plain.headers.get("Cache-Control", "")
