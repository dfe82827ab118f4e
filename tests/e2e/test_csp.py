"""The pages under their Content-Security-Policy, in Chromium: every page works, and the
browser reports no violation (web/security_headers.py: no inline script but the hashed
import map, no inline style, no other origin, no framing)."""

from __future__ import annotations

from pathlib import Path

from playwright.sync_api import expect

from tests.e2e.conftest import Stack
from tests.e2e.helpers import WAIT_MS, fill_form, submit_form

# Collects the browser's own CSP reports on every page, before any of its scripts run.
LISTEN = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", (e) => {
  const where = `${e.sourceFile}:${e.lineNumber}`;
  window.__cspViolations.push(`${e.violatedDirective} ${e.blockedURI} ${where}`);
});
"""


def violations(page) -> list[str]:  # type: ignore[no-untyped-def]
    return list(page.evaluate("window.__cspViolations || []"))


def test_the_pages_work_under_the_policy(new_context, stack: Stack, content_png: Path) -> None:  # type: ignore[no-untyped-def]
    context = new_context()
    context.add_init_script(LISTEN)
    page = context.new_page()
    console: list[str] = []
    page.on("console", lambda m: console.append(m.text))
    seen: dict[str, list[str]] = {}

    # the form: its module script runs (a preset fills the fields in), and it submits
    fill_form(page, content_png, iterations=3, max_size=32)
    header = page.context.request.get(stack.url + "/").headers["content-security-policy"]
    assert "frame-ancestors 'none'" in header and "'unsafe-inline'" not in header
    page.locator('label[for="preset-balanced"]').click()
    expect(page.locator("#iterations")).to_have_value("300")
    page.locator('label[for="preset-quick"]').click()
    fill_form(page, content_png, iterations=3, max_size=32)
    seen["/"] = violations(page)
    job_id = submit_form(page)

    # the dashboard: its scripts poll the job and draw; the swatches are styled by classes
    expect(page.locator("#status")).to_contain_text("succeeded", timeout=WAIT_MS)
    swatch = page.locator(".swatch-total").evaluate("e => getComputedStyle(e).backgroundColor")
    assert swatch not in ("", "transparent", "rgba(0, 0, 0, 0)"), swatch
    seen[f"/jobs/{job_id}"] = violations(page)

    # the list, built by its script from the API
    page.goto("/jobs")
    expect(page.locator(f'a[href="/jobs/{job_id}"]').first).to_be_visible(timeout=WAIT_MS)
    seen["/jobs"] = violations(page)

    # the operators' sign-in page
    page.goto("/fleet")
    expect(page.locator("#sign-in-form")).to_be_visible()
    seen["/fleet"] = violations(page)

    assert seen == {path: [] for path in seen}, seen
    assert not [m for m in console if "Content Security Policy" in m], console


def test_no_page_can_be_framed(new_context, stack: Stack) -> None:  # type: ignore[no-untyped-def]
    """A page of another origin that frames /jobs gets an empty frame (frame-ancestors)."""
    page = new_context().new_page()
    with page.expect_console_message(lambda m: "frame-ancestors" in m.text, timeout=20_000):
        page.set_content(f'<iframe id="f" src="{stack.url}/jobs"></iframe>')
    expect(page.frame_locator("#f").locator("#main")).to_have_count(0)
