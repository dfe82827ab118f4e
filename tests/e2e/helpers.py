"""Small helpers for the browser tests: submitting, waiting, reading the page."""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any

from PIL import Image

UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
DASHBOARD_URL = re.compile(rf"/jobs/({UUID})$")
WAIT_MS = 180_000  # generous: a busy CI machine; never a timing assertion
ROOT = Path(__file__).resolve().parents[2]


def png_bytes(
    size: tuple[int, int] = (48, 32), color: tuple[int, int, int] = (200, 90, 40)
) -> bytes:
    image = Image.new("RGB", size, color)
    for x in range(size[0]):
        image.putpixel((x, x % size[1]), (20, 40, 200))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def fill_form(page, content: Path, *, sample: str = "the-scream", **fields: Any) -> None:  # type: ignore[no-untyped-def]
    """Pick a sample style, upload the content photo, set fields (opening "advanced")."""
    page.goto("/")
    page.locator(f'label[for="sample-{sample}"]').click()
    page.set_input_files("#content", str(content))
    page.wait_for_selector("#content-drop.has-file")
    advanced = page.locator("#advanced")
    for name, value in fields.items():
        box = page.locator(f'#job-form [name="{name}"]')
        if box.locator("xpath=ancestor::details").count() and not advanced.evaluate("d => d.open"):
            page.locator("#advanced summary").click()
        box.fill(str(value))


def submit_form(page) -> str:  # type: ignore[no-untyped-def]
    """Click "Paint it", land on the dashboard; return the job id."""
    page.locator("#submit").click()
    page.wait_for_url(DASHBOARD_URL, timeout=30_000)
    match = DASHBOARD_URL.search(page.url)
    assert match, page.url
    return match.group(1)


def api_submit(context, base_url: str, content: bytes, style: bytes, **fields: Any) -> dict:  # type: ignore[no-untyped-def]
    """Submit through the JSON API with the context's own session cookie and CSRF token."""
    session = context.request.get(f"{base_url}/api/v1/session").json()
    multipart: dict[str, Any] = {
        "content": {"name": "content.png", "mimeType": "image/png", "buffer": content},
        "style": {"name": "style.png", "mimeType": "image/png", "buffer": style},
    }
    multipart.update({k: str(v) for k, v in fields.items()})
    response = context.request.post(
        f"{base_url}/api/v1/jobs",
        multipart=multipart,
        headers={"X-CSRF-Token": session["csrf_token"]},
    )
    assert response.status == 201, response.text()
    return response.json()


def counter(page) -> int:  # type: ignore[no-untyped-def]
    return int(page.locator("#it-done").inner_text())


def status(page) -> str:  # type: ignore[no-untyped-def]
    return page.locator("#status").inner_text().strip().lower()


def wait_status(page, *statuses: str, timeout: int = WAIT_MS) -> None:  # type: ignore[no-untyped-def]
    page.wait_for_function(
        "wanted => wanted.includes(document.querySelector('#status').textContent.trim())",
        arg=list(statuses),
        timeout=timeout,
    )
